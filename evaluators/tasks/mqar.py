"""Multi-query associative recall (Zoology, Arora et al. 2023).

Each sequence starts with ``num_kv_pairs`` key-value pairs ``k1 v1 k2 v2 ...``; keys come from
the first half of the vocabulary (ids 1 .. V/2 - 1), values from the second half (V/2 .. V-1),
both drawn without replacement. The rest of the sequence contains every key once more as a
query, at positions drawn with power-law spacing (queries tend to come soon after the context);
other positions hold random tokens. The model reads the sequence causally and must predict,
right after each queried key, the value bound to it: the loss and the accuracy count only those
positions (all others are IGNORE_INDEX).
"""

from __future__ import annotations

import numpy as np
import torch

from evaluators.tasks.base import IGNORE_INDEX, Task, register_task
from search_spaces.task_io import TaskIO


@register_task("mqar")
class MQAR(Task):
    @classmethod
    def io_for(cls, vocab_size: int = 64, seq_len: int = 32, num_kv_pairs: int = 4, n_train: int = 2000,
               n_test: int = 500, power_a: float = 0.01) -> TaskIO:
        if seq_len % 2:
            raise ValueError(f"mqar: seq_len must be even, got {seq_len}")
        if vocab_size <= seq_len:
            raise ValueError(f"mqar: vocab_size ({vocab_size}) must exceed seq_len ({seq_len})")
        if num_kv_pairs < 1 or 4 * num_kv_pairs > seq_len:
            raise ValueError(f"mqar: need 1 <= num_kv_pairs <= seq_len / 4, got {num_kv_pairs} for seq_len {seq_len}")
        if num_kv_pairs >= vocab_size // 2:
            raise ValueError(f"mqar: num_kv_pairs ({num_kv_pairs}) must be below vocab_size / 2")
        if n_train < 1 or n_test < 1:
            raise ValueError("mqar: n_train and n_test must be >= 1")
        return TaskIO(kind="tokens", num_classes=vocab_size, seq_len=seq_len, vocab_size=vocab_size,
                      causal=True, per_token=True)

    def _generate(self) -> dict:
        p = {**dict(vocab_size=64, seq_len=32, num_kv_pairs=4, n_train=2000, n_test=500, power_a=0.01), **self.params}
        rng = np.random.default_rng(self.seed)
        out = {}
        for split, n in (("train", p["n_train"]), ("test", p["n_test"])):
            out[split] = mqar_batch(rng, n, p["vocab_size"], p["seq_len"], p["num_kv_pairs"], p["power_a"])
        return out


def mqar_batch(rng: np.random.Generator, n: int, vocab_size: int, seq_len: int, num_kv_pairs: int,
               power_a: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` MQAR sequences: inputs (n, seq_len) int64, targets (n, seq_len) with IGNORE_INDEX
    everywhere but the positions of queried keys, whose target is the bound value."""
    half = vocab_size // 2
    ctx = 2 * num_kv_pairs
    keys = np.stack([rng.choice(np.arange(1, half), num_kv_pairs, replace=False) for _ in range(n)])
    values = np.stack([rng.choice(np.arange(half, vocab_size), num_kv_pairs, replace=False) for _ in range(n)])
    x = rng.integers(0, vocab_size, size=(n, seq_len))  # random filler
    x[:, 0:ctx:2] = keys
    x[:, 1:ctx:2] = values
    y = np.full((n, seq_len), IGNORE_INDEX, dtype=np.int64)
    # query slots: even offsets after the context, spaced by a power law favouring early slots
    slots = (seq_len - ctx) // 2
    w = power_a * np.arange(1, slots + 1) ** (power_a - 1)
    w = w / w.sum()
    for i in range(n):
        gaps = rng.choice(slots, num_kv_pairs, replace=False, p=w)
        pos = ctx + 2 * gaps  # where the queried keys go
        x[i, pos] = keys[i]
        y[i, pos] = values[i]  # next-token target at the query's position is the bound value
    return torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y)
