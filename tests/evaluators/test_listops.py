"""ListOps: labels equal an independent evaluator of the token sequence."""

import numpy as np
import pytest
import torch

from evaluators.tasks import make_task, task_io_for
from evaluators.tasks.listops import CLOSE, OPS, PAD, detokenize

P = dict(seq_len=64, max_depth=3, max_args=4, n_train=200, n_test=50)


def reference_eval(tokens) -> int:
    """Stack evaluator over the token ids (independent of the generator's tree)."""
    names = {v: k for k, v in OPS.items()}
    stack = []
    for t in (int(t) for t in tokens if t != PAD):
        if t in names:
            stack.append([names[t]])
        elif t == CLOSE:
            op, *args = stack.pop()
            v = {"MIN": min(args), "MAX": max(args), "MED": sorted(args)[(len(args) - 1) // 2] if len(args) % 2
                 else (sorted(args)[len(args) // 2 - 1] + sorted(args)[len(args) // 2]) // 2,
                 "SM": sum(args) % 10}[op]
            if not stack:
                return v
            stack[-1].append(v)
        else:
            stack[-1].append(t - 1)
    raise AssertionError("unbalanced expression")


def test_labels_match_reference_evaluator_and_shapes():
    task = make_task("listops", P, seed=0)
    io = task_io_for("listops", P)
    assert io.num_classes == 10 and not io.causal and not io.per_token and io.kind == "tokens"
    for split in ("train", "test"):
        x, y = task.split(split)
        assert x.shape == (len(y), 64) and int(x.max()) < io.vocab_size
        assert [reference_eval(r) for r in x.numpy()] == y.tolist()
    assert len(set(y.tolist())) > 3  # not a constant label


def test_depth_and_length_respected_and_all_ops_used():
    x, _ = make_task("listops", P, seed=1).split("train")
    seen = set()
    for row in x.numpy():
        depth = max_depth = 0
        for t in row:
            if t in OPS.values():
                depth += 1
                max_depth = max(max_depth, depth)
                seen.add(int(t))
            elif t == CLOSE:
                depth -= 1
        assert depth == 0 and 1 <= max_depth <= P["max_depth"]
        nz = np.flatnonzero(row != PAD)
        assert nz.max() == len(nz) - 1  # right-padded
    assert seen == set(OPS.values())


def test_seeded_and_readable():
    a = make_task("listops", P, seed=2).split("test")[0]
    b = type(make_task("listops", P, seed=2))(seed=2, **P).split("test")[0]
    assert torch.equal(a, b)
    assert detokenize([OPS["MAX"], 3, OPS["SM"], 10, 9, CLOSE, CLOSE, PAD]) == "[MAX 2 [SM 9 8 ] ]"
    assert reference_eval([OPS["MAX"], 3, OPS["SM"], 10, 9, CLOSE, CLOSE]) == 7


@pytest.mark.parametrize("bad", [dict(max_depth=0), dict(max_args=1), dict(seq_len=3)])
def test_bad_parameters(bad):
    with pytest.raises(ValueError, match="listops"):
        task_io_for("listops", bad)
