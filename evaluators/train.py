"""Proxy training: a fixed step budget of AdamW on the task's train split, then the accuracy on
its evaluation split (``task.eval_split``: the test split, or validation where a task holds one)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from evaluators.errors import NonFiniteLoss
from evaluators.tasks.base import IGNORE_INDEX, Task
from search_spaces.schema import from_mapping, setting

__all__ = ["TrainConfig", "TrainLoop", "TrainResult", "ProxyTraining", "train_proxy", "evaluate_accuracy", "evaluate_split", "lr_at"]


@dataclass(frozen=True)
class TrainConfig:
    """The ``train:`` section of a space file, declared: each setting's type and range."""

    steps: int = setting(100, low=1, doc="optimizer steps")
    batch_size: int = setting(32, low=1)
    lr: float = setting(3e-3, above=0, doc="peak learning rate (AdamW)")
    weight_decay: float = setting(0.01, low=0)
    warmup_steps: int = setting(10, low=0, doc="linear warm-up, then cosine decay to decay_to x lr")
    decay_to: float = setting(0.1, low=0, high=1, doc="the lr fraction reached at the last step (1: constant)")
    grad_clip: float = setting(1.0, low=0, doc="gradient norm clip (0 = none)")
    eval_samples: int = setting(1000, low=0, doc="test samples used for the accuracy (0 = all)")
    threads: int = setting(0, low=0, doc="torch threads while training (0 = leave as is)")
    # proxy runs per trial, each from its own initialisation and batch order (evaluators.seeds);
    # the quality metrics are their mean, stored with <metric>_std and <metric>_n
    seeds: int = setting(1, low=1)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From a space file's ``train:`` mapping; :class:`SettingError` names ``train.<key>``."""
        return from_mapping(cls, d, "train")


@dataclass
class TrainResult:
    accuracy: float
    final_loss: float
    loss_sum: float  # sum of training losses over all steps (training-speed estimate)
    steps: int
    seconds: float
    test_loss: float = float("nan")  # mean cross-entropy (nats) over the evaluated targets of task.eval_split


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.decay_to
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if logits.dim() == 3:  # per-token: (B, N, V) against (B, N)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
    return F.cross_entropy(logits, y)


@torch.no_grad()
def evaluate_split(model: torch.nn.Module, task: Task, max_samples: int = 0,
                   batch_size: int = 256, split: str | None = None) -> tuple[float, float]:
    """Accuracy and mean cross-entropy over the targets of ``split`` (default the task's
    ``eval_split``: "test", or "val" for tasks that hold a test split out), the first
    ``max_samples`` samples (0 = all). Per-token tasks count only positions with a target."""
    x, y = task.split(split or task.eval_split)
    if max_samples:
        x, y = x[:max_samples], y[:max_samples]
    model.eval()
    correct = total = 0
    loss_total = 0.0
    for i in range(0, len(x), batch_size):
        logits, yb = model(x[i : i + batch_size]), y[i : i + batch_size]
        c, n = task.correct(logits, yb)
        correct, total = correct + c, total + n
        if n:
            flat, ty = (logits.flatten(0, 1), yb.flatten()) if logits.dim() == 3 else (logits, yb)
            loss_total += float(F.cross_entropy(flat.float(), ty, ignore_index=IGNORE_INDEX, reduction="sum"))
    return correct / max(total, 1), loss_total / max(total, 1)


def evaluate_accuracy(model: torch.nn.Module, task: Task, max_samples: int = 0, batch_size: int = 256) -> float:
    return evaluate_split(model, task, max_samples, batch_size)[0]


class TrainLoop:
    """The proxy training one step at a time: AdamW, the warm-up + cosine schedule, and seeded
    mini-batches of the train split. Its whole state (step, optimizer, batch-order and global RNG)
    goes out with :meth:`state_dict` and comes back with :meth:`load_state_dict`, so a run that
    stopped resumes where it was and ends with the weights an uninterrupted run has (on CPU,
    bit for bit). The model's weights are saved by the caller with the model."""

    def __init__(self, model: torch.nn.Module, task: Task, cfg: TrainConfig, *, seed: int = 0):
        self.model, self.cfg = model, cfg
        self.x, self.y = task.split("train")
        self.gen = torch.Generator().manual_seed(seed)
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0  # steps done

    def train_step(self) -> float:
        """One optimizer step; returns its loss. Raises :class:`NonFiniteLoss` on NaN/inf."""
        cfg, model = self.cfg, self.model
        idx = torch.randint(0, len(self.x), (cfg.batch_size,), generator=self.gen)
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step, cfg)
        model.train()
        loss = _loss(model(self.x[idx]), self.y[idx])
        loss_val = loss.item()
        if not math.isfinite(loss_val):
            raise NonFiniteLoss(f"training loss became {loss_val} at step {self.step}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.step += 1
        return loss_val

    def state_dict(self) -> dict:
        """Tensors and primitives only (loadable with ``torch.load(weights_only=True)``)."""
        return {"step": self.step, "optimizer": self.opt.state_dict(), "batch_rng": self.gen.get_state(),
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["batch_rng"])
        torch.set_rng_state(state["torch_rng"])


class ProxyTraining:
    """:func:`train_proxy` in parts, for a caller that looks at the model between them (a proxy
    ladder's train rungs): :meth:`train_to` runs up to a step, :meth:`finish` runs the remaining
    steps and evaluates. Used as a context manager, which sets ``cfg.threads`` for its duration."""

    def __init__(self, model: torch.nn.Module, task: Task, cfg: TrainConfig, *, seed: int = 0,
                 on_step: Optional[Callable[[int, float], None]] = None):
        self.model, self.task, self.cfg, self.on_step = model, task, cfg, on_step
        self.loop = TrainLoop(model, task, cfg, seed=seed)
        self.loss_sum, self.last_loss = 0.0, float("nan")

    def __enter__(self) -> "ProxyTraining":
        self._threads = torch.get_num_threads()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self._threads)

    def train_to(self, step: int) -> None:
        """Train until ``step`` optimizer steps are done (at most ``cfg.steps``)."""
        while self.loop.step < min(step, self.cfg.steps):
            done = self.loop.step
            self.last_loss = self.loop.train_step()
            self.loss_sum += self.last_loss
            if self.on_step is not None:
                self.on_step(done, self.last_loss)

    def finish(self) -> TrainResult:
        """The remaining steps, then the accuracy and loss on ``task.eval_split``."""
        self.train_to(self.cfg.steps)
        acc, test_loss = evaluate_split(self.model, self.task, self.cfg.eval_samples)
        return TrainResult(acc, self.last_loss, self.loss_sum, self.cfg.steps, time.perf_counter() - self._t0,
                           test_loss)


def train_proxy(
    model: torch.nn.Module,
    task: Task,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    on_step: Optional[Callable[[int, float], None]] = None,
) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` steps on seeded mini-batches; return the accuracy on
    ``task.eval_split`` and the loss statistics. Raises :class:`NonFiniteLoss` if the loss
    becomes NaN/inf."""
    with ProxyTraining(model, task, cfg, seed=seed, on_step=on_step) as run:
        return run.finish()
