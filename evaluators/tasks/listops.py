"""ListOps (Nangia & Bowman 2018; the Long Range Arena version), generated procedurally.

An expression is a digit 0-9 or ``[OP a1 ... ak ]`` with OP one of MIN, MAX, MED (median, rounded
down) and SM (sum modulo 10) and 2..``max_args`` arguments, nested up to ``max_depth`` levels.
The label is the expression's value (10 classes). The model reads the whole token sequence
(non-causal, one prediction per sequence); shorter expressions are right-padded with PAD.

Token ids: PAD 0, digits 0-9 -> 1..10, ``[MIN`` 11, ``[MAX`` 12, ``[MED`` 13, ``[SM`` 14, ``]`` 15.
"""

from __future__ import annotations

import numpy as np
import torch

from evaluators.tasks.base import Task, register_task
from search_spaces.task_io import TaskIO

__all__ = ["OPS", "PAD", "CLOSE", "VOCAB_SIZE", "random_expression", "evaluate_expression", "tokenize", "detokenize"]

PAD, CLOSE = 0, 15
OPS = {"MIN": 11, "MAX": 12, "MED": 13, "SM": 14}
VOCAB_SIZE = 16


def _apply(op: str, args: list[int]) -> int:
    if op == "MIN":
        return min(args)
    if op == "MAX":
        return max(args)
    if op == "MED":
        return int(np.floor(np.median(args)))
    return sum(args) % 10  # SM


def random_expression(rng: np.random.Generator, max_depth: int, max_args: int, p_leaf: float = 0.25, depth: int = 0):
    """A nested list ``[op, arg, ...]`` or an int. The root is always an operator."""
    if depth >= max_depth or (depth > 0 and rng.random() < p_leaf):
        return int(rng.integers(10))
    op = list(OPS)[rng.integers(len(OPS))]
    k = int(rng.integers(2, max_args + 1))
    return [op] + [random_expression(rng, max_depth, max_args, p_leaf, depth + 1) for _ in range(k)]


def evaluate_expression(expr) -> int:
    if isinstance(expr, int):
        return expr
    return _apply(expr[0], [evaluate_expression(a) for a in expr[1:]])


def tokenize(expr) -> list[int]:
    if isinstance(expr, int):
        return [expr + 1]
    out = [OPS[expr[0]]]
    for a in expr[1:]:
        out += tokenize(a)
    return out + [CLOSE]


def detokenize(tokens) -> str:
    """Readable form, e.g. ``[MAX 2 9 [MIN 4 7 ] 0 ]``."""
    names = {v: f"[{k}" for k, v in OPS.items()}
    words = [names.get(t, "]" if t == CLOSE else str(t - 1)) for t in tokens if t != PAD]
    return " ".join(words)


@register_task("listops")
class ListOps(Task):
    @classmethod
    def io_for(cls, seq_len: int = 128, max_depth: int = 4, max_args: int = 5, n_train: int = 4000,
               n_test: int = 500) -> TaskIO:
        if max_depth < 1:
            raise ValueError(f"listops: max_depth must be >= 1, got {max_depth}")
        if max_args < 2:
            raise ValueError(f"listops: max_args must be >= 2, got {max_args}")
        if seq_len < 4:
            raise ValueError(f"listops: seq_len must be >= 4 (the shortest expression is [OP a b ]), got {seq_len}")
        if n_train < 1 or n_test < 1:
            raise ValueError("listops: n_train and n_test must be >= 1")
        return TaskIO(kind="tokens", num_classes=10, seq_len=seq_len, vocab_size=VOCAB_SIZE, causal=False)

    def _generate(self) -> dict:
        p = {**dict(seq_len=128, max_depth=4, max_args=5, n_train=4000, n_test=500), **self.params}
        rng = np.random.default_rng(self.seed)
        out = {}
        for split, n in (("train", p["n_train"]), ("test", p["n_test"])):
            x = np.full((n, p["seq_len"]), PAD, dtype=np.int64)
            y = np.empty(n, dtype=np.int64)
            for i in range(n):
                while True:  # rejection: expressions longer than seq_len are drawn again
                    expr = random_expression(rng, p["max_depth"], p["max_args"])
                    toks = tokenize(expr)
                    if len(toks) <= p["seq_len"]:
                        break
                x[i, : len(toks)] = toks
                y[i] = evaluate_expression(expr)
            out[split] = (torch.from_numpy(x), torch.from_numpy(y))
        return out
