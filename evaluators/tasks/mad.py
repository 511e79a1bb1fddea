"""The MAD synthetic suite (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
Architectures"): in-context recall, fuzzy recall, noisy recall, selective copying, compression,
memorization. Sequences follow the definitions of the paper's data generators (the ``mad-lab``
repository); our own code, CPU-sized defaults (MAD's own runs use seq_len 128 and larger
vocabularies; every size is a parameter). Seeded with ``numpy.random.default_rng(seed)``.

Conventions shared with MAD:

- the recall tasks are next-token tasks: the *train* split's targets are the inputs shifted by one
  (every next token, as MAD trains them); the *test* split scores only the probed value: every
  target is ``IGNORE_INDEX`` except the position(s) whose next token is the probed value.
- vocabulary layout: keys are ``[0, n/2)``, values ``[n/2, n)`` where ``n`` is the non-special
  vocabulary (``vocab_size`` minus special tokens minus ``noise_vocab_size``); noise tokens are
  ``[n, n + noise_vocab_size)``; special tokens (copy prefix, pad, blank, insert, compression)
  are the last ids.

Compression: MAD reconstructs the whole sequence from the embedding of the final compression
token through an MLP decoder; our model builder has no such decoder, so here the data are MAD's
(random tokens, then the compression token; targets = the sequence) but the bottleneck is not
enforced: it is a non-causal per-token task (see ``MADCompression``).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from evaluators.tasks.base import IGNORE_INDEX, Task, register_task
from search_spaces.task_io import TaskIO

__all__ = [
    "in_context_recall_instance",
    "fuzzy_recall_instance",
    "selective_copying_instance",
    "compression_instance",
    "memorization_instance",
    "memorization_map",
]


# ---------------------------------------------------------------------------- generators
def in_context_recall_instance(rng: np.random.Generator, *, vocab_size: int, seq_len: int, train: bool,
                               noise_vocab_size: int = 0, frac_noise: float = 0.0):
    """Key-value pairs (a key keeps its value when it repeats), optionally pairs of noise tokens
    instead (probability ``frac_noise``), then the copy prefix, a key seen earlier and its value.
    Returns ``(inputs, targets)`` of length ``seq_len`` (after the autoregressive shift)."""
    copy_prefix = vocab_size - 1
    n = vocab_size - 1 - noise_vocab_size
    keys, values = np.arange(n // 2), np.arange(n // 2, n)
    noise = np.arange(n, n + noise_vocab_size)
    pairs = seq_len // 2
    must_be_kv = rng.integers(pairs)  # at least one real pair
    bound: dict[int, int] = {}
    seq: list[int] = []
    for i in range(pairs - 1):  # the last pair's slot goes to copy prefix + probe
        if frac_noise > 0 and i != must_be_kv and rng.random() < frac_noise:
            seq += [int(t) for t in rng.choice(noise, 2)]
            continue
        k = int(rng.choice(keys))
        v = bound.setdefault(k, int(rng.choice(values)))
        seq += [k, v]
    probe = int(rng.choice(sorted(bound)))
    seq += [copy_prefix, probe, bound[probe]]  # length seq_len + 1
    seq = np.asarray(seq, dtype=np.int64)
    x = seq[:-1]
    if train:
        return x, seq[1:]
    y = np.full(seq_len, IGNORE_INDEX, dtype=np.int64)
    y[-1] = bound[probe]  # the last input is the probed key; its next token is the value
    return x, y


def _motif(rng, vocab: np.ndarray, size: int) -> tuple:
    return tuple(int(t) for t in rng.choice(vocab, size, replace=False))  # one ordered permutation


def fuzzy_recall_instance(rng: np.random.Generator, *, vocab_size: int, seq_len: int, train: bool,
                          k_motif_size: int = 3, v_motif_size: int = 3):
    """Keys and values are motifs of 1..k (1..v) distinct adjacent tokens; a key motif keeps its
    value motif. The probe pair is planted at a random point; the sequence ends with the copy
    prefix, the probe key and its value; left padding fills up to ``seq_len`` + 1. At test time
    every key has the maximal motif size (as in MAD). Test targets: the probed value's tokens."""
    copy_prefix, pad = vocab_size - 1, vocab_size - 2
    n = vocab_size - 2
    keys, values = np.arange(n // 2), np.arange(n // 2, n)
    k_sizes = list(range(1, k_motif_size + 1)) if train else [k_motif_size]
    v_sizes = list(range(1, v_motif_size + 1))
    k_probe = _motif(rng, keys, int(rng.choice(k_sizes)))
    v_probe = _motif(rng, values, int(rng.choice(v_sizes)))
    probe_len = len(k_probe) + len(v_probe)
    plant_at = rng.integers(max(1, seq_len - 2 * probe_len))
    bound = {k_probe: v_probe}
    seq: list[int] = []
    planted = False
    while len(seq) < seq_len - probe_len - (k_motif_size + v_motif_size):
        if not planted and len(seq) >= plant_at:
            seq += [*k_probe, *v_probe]
            planted = True
            continue
        k = _motif(rng, keys, int(rng.choice(k_sizes)))
        if k not in bound:
            bound[k] = _motif(rng, values, int(rng.choice(v_sizes)))
        planted |= k == k_probe
        seq += [*k, *bound[k]]
    if not planted:  # a very short sequence: make sure the probe was seen
        seq += [*k_probe, *v_probe]
    tail = [copy_prefix, *k_probe, *v_probe]
    seq = seq[: seq_len + 1 - len(tail)] if len(seq) + len(tail) > seq_len + 1 else seq
    seq = [pad] * (seq_len + 1 - len(seq) - len(tail)) + seq + tail
    seq = np.asarray(seq, dtype=np.int64)
    x = seq[:-1]
    if train:
        return x, seq[1:]
    y = np.full(seq_len, IGNORE_INDEX, dtype=np.int64)
    y[seq_len - len(v_probe):] = v_probe  # position i predicts token i + 1: the value's tokens
    return x, y


def selective_copying_instance(rng: np.random.Generator, *, vocab_size: int, seq_len: int,
                               num_tokens_to_copy: int):
    """``num_tokens_to_copy`` tokens scattered among blank (noise) tokens, then the copy token and
    one blank per token to copy; the targets at those final blanks are the non-blank tokens in
    their original order (everything else is ignored)."""
    copy_token, blank = vocab_size - 1, vocab_size - 2
    to_copy = rng.integers(0, vocab_size - 2, num_tokens_to_copy)
    n_blank = seq_len - 2 * num_tokens_to_copy - 1
    first = np.full(num_tokens_to_copy + n_blank, blank, dtype=np.int64)
    where = np.sort(rng.choice(len(first), num_tokens_to_copy, replace=False))  # slots of the tokens
    first[where] = to_copy
    x = np.concatenate([first, [copy_token], np.full(num_tokens_to_copy, blank)]).astype(np.int64)
    y = np.full(seq_len, IGNORE_INDEX, dtype=np.int64)
    y[-num_tokens_to_copy:] = to_copy
    return x, y


def compression_instance(rng: np.random.Generator, *, vocab_size: int, seq_len: int):
    """``seq_len - 1`` random tokens then the compression token; targets are the sequence."""
    x = np.concatenate([rng.integers(0, vocab_size - 1, seq_len - 1), [vocab_size - 1]]).astype(np.int64)
    return x, x.copy()


def memorization_map(vocab_size: int, seed: int = 12345) -> dict[int, int]:
    """The fixed key -> value map of the memorization task (keys ``[0, n/2)``, values
    ``[n/2, n)`` with ``n = vocab_size - 1``; a bijection drawn with its own fixed seed, the same
    for every data seed: it is what the model has to memorise in its weights)."""
    n = vocab_size - 1
    g = np.random.default_rng(seed)
    keys, values = np.arange(n // 2), g.permutation(np.arange(n // 2, n))
    return {int(k): int(v) for k, v in zip(keys, values[: len(keys)])}


def memorization_instance(rng: np.random.Generator, *, vocab_size: int, seq_len: int, kv_map: dict):
    """Pairs ``key, insert``; the target at the insert token is the key's value in the fixed map."""
    insert = vocab_size - 1
    keys = rng.choice(np.asarray(sorted(kv_map)), seq_len // 2)
    x = np.empty(seq_len, dtype=np.int64)
    y = np.full(seq_len, IGNORE_INDEX, dtype=np.int64)
    x[0::2], x[1::2] = keys, insert
    y[1::2] = [kv_map[int(k)] for k in keys]
    return x, y


# ---------------------------------------------------------------------------- tasks
def _check_common(name, vocab_size, seq_len, n_train, n_test, min_vocab=4, min_len=4, even=False):
    """The checks every MAD task makes (``even``: of pairs of tokens, so seq_len is even)."""
    if vocab_size < min_vocab:
        raise ValueError(f"{name}: vocab_size must be >= {min_vocab}, got {vocab_size}")
    if seq_len < min_len:
        raise ValueError(f"{name}: seq_len must be >= {min_len}, got {seq_len}")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"{name}: n_train and n_test must be >= 1")
    if even and seq_len % 2:
        raise ValueError(f"{name}: seq_len must be even, got {seq_len}")


class _MADTask(Task):
    """Stacks ``n_train``/``n_test`` instances of ``_instance(rng, train, params)``: by default the
    task's ``generator`` called with the parameters it takes (and ``train`` if it takes it). The
    parameters' defaults are those of ``io_for`` (written once, in its signature)."""

    generator = None  # one of the instance functions above

    def _instance(self, rng, train: bool, p: dict):
        wanted = inspect.signature(self.generator).parameters
        kw = {k: v for k, v in p.items() if k in wanted}
        return self.generator(rng, **kw, **({"train": train} if "train" in wanted else {}))

    def _generate(self) -> dict:
        defaults = inspect.signature(type(self).io_for).parameters.values()
        p = {**{d.name: d.default for d in defaults if d.default is not d.empty}, **self.params}
        rng = np.random.default_rng(self.seed)
        out = {}
        for split, n in (("train", p["n_train"]), ("test", p["n_test"])):
            xs, ys = zip(*(self._instance(rng, split == "train", p) for _ in range(n)))
            out[split] = (torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)))
        return out


def _tokens_io(vocab_size, seq_len, causal=True):
    return TaskIO(kind="tokens", num_classes=vocab_size, seq_len=seq_len, vocab_size=vocab_size,
                  causal=causal, per_token=True)


@register_task("mad-recall")
class MADRecall(_MADTask):
    """In-context recall: after the copy prefix and a key seen earlier, predict its value."""

    generator = staticmethod(in_context_recall_instance)

    @classmethod
    def io_for(cls, vocab_size: int = 16, seq_len: int = 64, n_train: int = 2000, n_test: int = 200) -> TaskIO:
        _check_common("mad-recall", vocab_size, seq_len, n_train, n_test, even=True)
        return _tokens_io(vocab_size, seq_len)


@register_task("mad-noisy-recall")
class MADNoisyRecall(_MADTask):
    """In-context recall with pairs of noise tokens (own vocabulary) in place of some pairs."""

    generator = staticmethod(in_context_recall_instance)

    @classmethod
    def io_for(cls, vocab_size: int = 32, seq_len: int = 64, noise_vocab_size: int = 16, frac_noise: float = 0.2,
               n_train: int = 2000, n_test: int = 200) -> TaskIO:
        _check_common("mad-noisy-recall", vocab_size, seq_len, n_train, n_test, even=True)
        if not 0 <= frac_noise < 1:
            raise ValueError(f"mad-noisy-recall: frac_noise must be in [0, 1), got {frac_noise}")
        if noise_vocab_size < 1 or vocab_size - 1 - noise_vocab_size < 2:
            raise ValueError(f"mad-noisy-recall: need 1 <= noise_vocab_size <= vocab_size - 3, got {noise_vocab_size}")
        return _tokens_io(vocab_size, seq_len)


@register_task("mad-fuzzy-recall")
class MADFuzzyRecall(_MADTask):
    """Recall with keys and values spread over 1..k (1..v) adjacent tokens."""

    generator = staticmethod(fuzzy_recall_instance)

    @classmethod
    def io_for(cls, vocab_size: int = 16, seq_len: int = 64, k_motif_size: int = 3, v_motif_size: int = 3,
               n_train: int = 2000, n_test: int = 200) -> TaskIO:
        _check_common("mad-fuzzy-recall", vocab_size, seq_len, n_train, n_test)
        n = vocab_size - 2
        if k_motif_size < 1 or v_motif_size < 1 or k_motif_size > n // 2 or v_motif_size > n - n // 2:
            raise ValueError(f"mad-fuzzy-recall: motif sizes must be in [1, {n // 2}] for vocab_size {vocab_size}")
        if seq_len < 3 * (k_motif_size + v_motif_size) + 1:
            raise ValueError(f"mad-fuzzy-recall: seq_len {seq_len} is too short for motifs of {k_motif_size}+{v_motif_size}")
        return _tokens_io(vocab_size, seq_len)


@register_task("mad-selective-copy")
class MADSelectiveCopy(_MADTask):
    """Selective copying: after the copy token, emit the non-blank tokens in order."""

    generator = staticmethod(selective_copying_instance)

    @classmethod
    def io_for(cls, vocab_size: int = 16, seq_len: int = 64, num_tokens_to_copy: int = 8,
               n_train: int = 2000, n_test: int = 200) -> TaskIO:
        _check_common("mad-selective-copy", vocab_size, seq_len, n_train, n_test)
        if num_tokens_to_copy < 1 or seq_len <= 2 * num_tokens_to_copy + 1:
            raise ValueError(f"mad-selective-copy: need 1 <= num_tokens_to_copy and seq_len > 2 * num_tokens_to_copy + 1, "
                             f"got {num_tokens_to_copy} for seq_len {seq_len}")
        return _tokens_io(vocab_size, seq_len)


@register_task("mad-compression")
class MADCompression(_MADTask):
    """Compression (MAD's data; non-causal per-token reconstruction, bottleneck not enforced)."""

    generator = staticmethod(compression_instance)

    @classmethod
    def io_for(cls, vocab_size: int = 16, seq_len: int = 32, n_train: int = 2000, n_test: int = 200) -> TaskIO:
        _check_common("mad-compression", vocab_size, seq_len, n_train, n_test, min_vocab=2, min_len=2)
        return _tokens_io(vocab_size, seq_len, causal=False)


@register_task("mad-memorization")
class MADMemorization(_MADTask):
    """Memorization: a fixed key -> value map (same for every seed) queried as ``key, insert``."""

    @classmethod
    def io_for(cls, vocab_size: int = 256, seq_len: int = 32, n_train: int = 2000, n_test: int = 200,
               map_seed: int = 12345) -> TaskIO:
        _check_common("mad-memorization", vocab_size, seq_len, n_train, n_test, even=True)
        return _tokens_io(vocab_size, seq_len)

    def _instance(self, rng, train, p):
        if not hasattr(self, "_map"):
            self._map = memorization_map(p["vocab_size"], p["map_seed"])
        return memorization_instance(rng, vocab_size=p["vocab_size"], seq_len=p["seq_len"], kv_map=self._map)
