"""The MAD tasks against their published definitions (Poli et al. 2024; mad-lab generators)."""

import numpy as np
import pytest
import torch

from evaluators.tasks import IGNORE_INDEX, list_tasks, make_task, task_io_for
from evaluators.tasks.mad import memorization_map

SMALL = dict(n_train=40, n_test=40)
MAD = {
    "mad-recall": dict(vocab_size=16, seq_len=32),
    "mad-noisy-recall": dict(vocab_size=24, seq_len=32, noise_vocab_size=8, frac_noise=0.3),
    "mad-fuzzy-recall": dict(vocab_size=16, seq_len=48, k_motif_size=2, v_motif_size=2),
    "mad-selective-copy": dict(vocab_size=12, seq_len=24, num_tokens_to_copy=5),
    "mad-compression": dict(vocab_size=12, seq_len=16),
    "mad-memorization": dict(vocab_size=33, seq_len=16),
}


@pytest.mark.parametrize("name", sorted(MAD))
def test_registered_seeded_shapes_and_vocab(name):
    assert name in list_tasks()
    params = {**MAD[name], **SMALL}
    io = task_io_for(name, params)
    a, b = make_task(name, params, seed=3), type(make_task(name, params, seed=3))(seed=3, **params)
    other = type(a)(seed=4, **params)
    for split in ("train", "test"):
        x, y = a.split(split)
        assert x.shape == y.shape == (40, io.seq_len) and x.dtype == torch.long
        assert 0 <= int(x.min()) and int(x.max()) < io.vocab_size
        assert torch.equal(x, b.split(split)[0]) and torch.equal(y, b.split(split)[1])  # seeded
        assert ((y == IGNORE_INDEX) | ((y >= 0) & (y < io.num_classes))).all()
    assert not torch.equal(a.split("train")[0], other.split("train")[0])


def _bound_values(seq, keys_end, values_end):
    """key -> value read from consecutive (key, value) pairs of a recall sequence."""
    bound = {}
    for k, v in zip(seq[0::2], seq[1::2]):
        if k < keys_end and keys_end <= v < values_end:
            assert bound.setdefault(int(k), int(v)) == v  # a key keeps its value
    return bound


@pytest.mark.parametrize("name", ["mad-recall", "mad-noisy-recall"])
def test_recall_target_is_value_bound_earlier(name):
    p = {**MAD[name], **SMALL}
    vocab, noise = p["vocab_size"], p.get("noise_vocab_size", 0)
    n = vocab - 1 - noise
    x, y = make_task(name, p, seed=0).split("test")
    saw_noise = False
    for xi, yi in zip(x.numpy(), y.numpy()):
        assert xi[-2] == vocab - 1  # copy prefix, then the probed key
        assert (yi != IGNORE_INDEX).sum() == 1 and yi[-1] != IGNORE_INDEX
        bound = _bound_values(xi[:-2], n // 2, n)
        assert bound[int(xi[-1])] == yi[-1]
        saw_noise |= bool(((xi >= n) & (xi < n + noise)).any())
    assert saw_noise == (noise > 0)
    xt, yt = make_task(name, p, seed=0).split("train")  # train: next-token targets (shifted inputs)
    assert torch.equal(xt[:, 1:], yt[:, :-1])


def test_fuzzy_recall_value_motif_follows_probe_key():
    p = {**MAD["mad-fuzzy-recall"], **SMALL}
    vocab, k = p["vocab_size"], p["k_motif_size"]
    x, y = make_task("mad-fuzzy-recall", p, seed=0).split("test")
    for xi, yi in zip(x.numpy(), y.numpy()):
        tgt = np.flatnonzero(yi != IGNORE_INDEX)
        assert len(tgt) >= 1 and tgt[-1] == len(xi) - 1 and np.all(np.diff(tgt) == 1)
        value = [int(t) for t in yi[tgt]]
        # the full sequence is x followed by the last target; the copy prefix sits before the probe key
        full = list(xi) + [value[-1]]
        cp = len(full) - len(value) - k - 1
        assert full[cp] == vocab - 1
        probe = full[cp + 1: cp + 1 + k]
        assert full[cp + 1 + k:] == value
        # the same key motif followed by the same value motif appears earlier in the sequence
        hay = full[:cp]
        motif = probe + value
        assert any(hay[i:i + len(motif)] == motif for i in range(len(hay) - len(motif) + 1))


def test_selective_copy_targets_are_non_noise_tokens_in_order():
    p = {**MAD["mad-selective-copy"], **SMALL}
    vocab, m = p["vocab_size"], p["num_tokens_to_copy"]
    x, y = make_task("mad-selective-copy", p, seed=0).split("test")
    blank, copy = vocab - 2, vocab - 1
    for xi, yi in zip(x.numpy(), y.numpy()):
        head = xi[: len(xi) - m - 1]
        assert xi[len(xi) - m - 1] == copy and (xi[len(xi) - m:] == blank).all()
        assert list(yi[-m:]) == [t for t in head if t != blank]
        assert (yi[:-m] == IGNORE_INDEX).all()
    positions = [tuple(np.flatnonzero(xi[: len(xi) - m - 1] != blank)) for xi in x.numpy()]
    assert len(set(positions)) > 1  # the tokens are scattered, not at fixed slots


def test_compression_reconstructs_the_sequence():
    p = {**MAD["mad-compression"], **SMALL}
    io = task_io_for("mad-compression", p)
    x, y = make_task("mad-compression", p, seed=0).split("train")
    assert torch.equal(x, y) and (x[:, -1] == p["vocab_size"] - 1).all() and (x[:, :-1] < p["vocab_size"] - 1).all()
    assert not io.causal and io.per_token


def test_memorization_uses_one_fixed_map_across_seeds():
    p = {**MAD["mad-memorization"], **SMALL}
    kv = memorization_map(p["vocab_size"])
    assert len(set(kv.values())) == len(kv)  # a bijection onto the value half
    for seed in (0, 1):
        x, y = make_task("mad-memorization", p, seed=seed).split("test")
        assert (x[:, 1::2] == p["vocab_size"] - 1).all() and (y[:, 0::2] == IGNORE_INDEX).all()
        assert all(kv[int(k)] == int(v) for k, v in zip(x[:, 0::2].flatten(), y[:, 1::2].flatten()))


@pytest.mark.parametrize("name,bad", [("mad-recall", dict(seq_len=31)), ("mad-selective-copy", dict(seq_len=10, num_tokens_to_copy=5)),
                                      ("mad-noisy-recall", dict(frac_noise=1.0)), ("mad-fuzzy-recall", dict(k_motif_size=9))])
def test_bad_parameters_fail_with_the_task_name(name, bad):
    with pytest.raises(ValueError, match=name):
        task_io_for(name, bad)
