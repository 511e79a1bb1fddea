import math
import re

import pytest
import torch

from evaluators.tasks import IGNORE_INDEX, get_task, list_tasks, make_task, task_io_for
from evaluators.tasks.mqar import MQAR
from search_spaces.task_io import TaskIO

P = dict(vocab_size=32, seq_len=24, num_kv_pairs=3, n_train=64, n_test=16)


def test_mqar_definition():
    t = MQAR(seed=1, **P)
    x, y = t.split("train")
    V, half, D = 32, 16, 3
    assert x.shape == y.shape == (64, 24) and x.dtype == torch.long
    for i in range(len(x)):
        keys, values = x[i, 0 : 2 * D : 2], x[i, 1 : 2 * D : 2]
        assert ((keys >= 1) & (keys < half)).all(), "keys from the first half (no 0)"
        assert ((values >= half) & (values < V)).all(), "values from the second half"
        assert len(set(keys.tolist())) == D and len(set(values.tolist())) == D
        binding = dict(zip(keys.tolist(), values.tolist()))
        pos = (y[i] != IGNORE_INDEX).nonzero().flatten()
        assert len(pos) == D, "one target per queried key"
        assert (pos >= 2 * D).all(), "no loss inside the context"
        for p in pos.tolist():
            # the target at a query position is the value bound to the key found there
            assert binding[int(x[i, p])] == int(y[i, p])
        assert sorted(x[i, pos].tolist()) == sorted(keys.tolist()), "every key is queried once"


def test_mqar_seeded_and_splits_differ():
    a, b = MQAR(seed=3, **P), MQAR(seed=3, **P)
    assert torch.equal(a.split("train")[0], b.split("train")[0])
    assert not torch.equal(a.split("train")[0][:16], a.split("test")[0])
    assert not torch.equal(MQAR(seed=4, **P).split("train")[0], a.split("train")[0])


def test_mqar_io_and_bad_params():
    io = task_io_for("mqar", P)
    assert io.causal and io.per_token and io.vocab_size == 32 and io.num_classes == 32
    import pytest

    with pytest.raises(ValueError, match="vocab_size"):
        task_io_for("mqar", dict(P, vocab_size=16))
    with pytest.raises(TypeError, match="no parameter"):
        task_io_for("mqar", dict(P, colour=1))


def test_mnist1d_offline_generation():
    t = make_task("mnist1d", {"num_samples": 100}, seed=0)
    x, y = t.split("train")
    xt, yt = t.split("test")
    assert x.shape == (80, 1, 40) and xt.shape == (20, 1, 40)
    assert y.min() >= 0 and y.max() <= 9
    assert t.io.kind == "signal" and not t.io.causal
    assert make_task("mnist1d", {"num_samples": 100}, seed=0) is t  # cached per process


@pytest.mark.parametrize("name", list_tasks())
def test_every_task_declares_the_chance_level_of_what_it_reports(name):
    """What a model that learned nothing scores: a uniform guess over the classes (known without
    data, so a study's floors are resolved when its space is read), for accuracy and every metric
    the task reports beyond it."""
    cls = get_task(name)
    io = TaskIO(kind="tokens", num_classes=32, seq_len=8, vocab_size=32)
    chance = cls.chance(io)
    assert chance["accuracy"] == 1 / 32 and chance["final_loss"] == pytest.approx(math.log(32))
    assert set(cls.reports) <= set(chance)


def test_text_chance_is_eight_bits_per_byte():
    assert get_task("text").chance(TaskIO(kind="tokens", num_classes=256, seq_len=8, vocab_size=256))["bits_per_byte"] == 8.0


FLOORED = """
task: {name: mqar, params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2, n_train: 64, n_test: 16}}
objectives: {accuracy: maximize, latency_ms: minimize}
floors: %s
arch:
  stages:
    - {depth: 1, dim: 16, mixer: {choices: {softmax: {heads: 1}}}}
"""


def test_floors_are_checked_and_resolved_where_the_space_is_read():
    from evaluators.spaces import check_space
    from search_spaces import SpaceError
    from tests.cli_helpers import load_space_text

    checked = check_space(load_space_text(FLOORED % "{accuracy: chance, latency_ms: 5, final_loss: chance}"))
    assert checked.floors == {"accuracy": {"above": 1 / 32}, "latency_ms": {"below": 5.0},
                              "final_loss": {"below": pytest.approx(math.log(32))}}
    for floors, fragment in [("{latency_ms: chance}", "floors.latency_ms: task 'mqar' declares no chance level"),
                             ("{nonsense: 0.5}", "floors.nonsense: unknown metric"),
                             ("{bits_per_byte: 8}", "floors.bits_per_byte: task 'mqar' does not report bits_per_byte"),
                             ("{accuracy: high}", "floors.accuracy: 'high' is not allowed (a number, or 'chance'"),
                             ("[accuracy]", "floors: ['accuracy'] is not allowed (a mapping)")]:
        with pytest.raises(SpaceError, match=re.escape(fragment)):
            check_space(load_space_text(FLOORED % floors))
