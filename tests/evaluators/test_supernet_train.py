"""Supernet training: sandwich paths, distillation, and a resume that ends bit-identical."""

import pytest
import torch

from evaluators.supernet_train import SupernetConfig, SupernetTraining, distill_loss
from evaluators.train import TrainConfig
from search_spaces import TaskIO
from search_spaces.space import parse_space
from search_spaces.supernet import Supernet

IO = TaskIO("tokens", 7, seq_len=6, vocab_size=7, causal=True, per_token=True)
CFG = TrainConfig(steps=4, batch_size=4, lr=1e-2, warmup_steps=1)
ONE_RANDOM = SupernetConfig(random_paths=1)


class TinyTask:
    """Random token sequences whose target is the previous token."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 7, (32, 6), generator=g)
        self.y = torch.roll(self.x, 1, dims=1)

    def split(self, name):
        return self.x, self.y


def _space():
    raw = {"task": {"name": "tiny"}, "arch": {"stages": [{
        "depth": [1, 2], "dim": [8, 16], "mixer": {"per_layer": True, "choices": {"softmax": {"heads": [1, 2]},
                                                                                "hyena": {}, "conv": {}}},
        "ffn": {"type": ["mlp", "none"], "ratio": [1, 2]}}]}}
    return parse_space(raw).bind(IO)


def _training(seed, paths=ONE_RANDOM, **kw):
    torch.manual_seed(seed)
    return SupernetTraining(Supernet(_space()), TinyTask(), CFG, paths, **kw)


def test_resume_after_a_stop_is_bit_identical(tmp_path):
    straight = _training(0)
    straight.train_to(4)
    first = _training(0)
    first.train_to(2, checkpoint=tmp_path / "net.pt")
    torch.manual_seed(123)  # the resumed process's RNG is elsewhere; the checkpoint brings it back
    resumed = _training(7)
    resumed.resume(tmp_path / "net.pt")
    resumed.train_to(4)
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], v) for k, v in _training(0).net.state_dict().items())  # it trained


def test_each_step_runs_the_sandwich_and_random_paths():
    seen = []
    run = _training(0, SupernetConfig(random_paths=2), on_step=lambda step, loss, archs: seen.append((step, archs)))
    run.train_to(2)
    assert [s for s, _ in seen] == [1, 2]
    archs = seen[0][1]
    assert len(archs) == 4 and archs[:2] == run.extremes
    assert archs[0].depth == 2 and archs[1].depth == 1


def test_distillation_trains_on_the_largest_paths_labels():
    run = _training(0, SupernetConfig(random_paths=1, distill=True))
    assert run.train_step() > 0
    teacher = torch.randn(3, 5)
    assert distill_loss(teacher, teacher, torch.zeros(3, dtype=torch.long)) < distill_loss(
        -teacher, teacher, torch.zeros(3, dtype=torch.long))


def test_a_step_needs_a_path():
    with pytest.raises(ValueError):
        SupernetConfig(random_paths=0, sandwich=False)
    with pytest.raises(ValueError):
        SupernetConfig(sandwich=False, distill=True)
