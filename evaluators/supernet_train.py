"""Training a supernet (:class:`search_spaces.supernet.Supernet`): a few paths per step.

Each optimizer step draws one mini-batch and runs ``random_paths`` architectures drawn uniformly
(every choice of the space uniform, :func:`search_spaces.supernet_paths.random_arch`), plus, under
the sandwich rule (BigNAS), the largest and the smallest architecture; their gradients add up
before one AdamW step on the shared tensors. With ``distill`` the other paths learn the largest
path's predictions (in-place distillation: its soft labels, detached) instead of the labels.

Everything that decides the next step (the step count, the optimizer, the batch and path
generators, torch's global RNG) is in :meth:`SupernetTraining.state_dict` with the weights, so a
run saved at step k and resumed ends with the weights of a run that never stopped (on CPU, bit for
bit). :meth:`SupernetTraining.save` writes the checkpoint atomically (a kill mid-write leaves the
previous one).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from evaluators.errors import NonFiniteLoss
from evaluators.tasks.base import IGNORE_INDEX, Task
from evaluators.train import TrainConfig, lr_at
from search_spaces.supernet import Supernet
from search_spaces.supernet_paths import extreme_arch, random_arch

__all__ = ["SupernetConfig", "SupernetTraining", "distill_loss", "task_loss"]


@dataclass(frozen=True)
class SupernetConfig:
    """How paths are drawn each step (the optimizer settings are a :class:`TrainConfig`)."""

    random_paths: int = 2
    sandwich: bool = True  # also the largest and the smallest path, every step
    distill: bool = False  # other paths learn the largest path's soft labels (needs sandwich)
    seed: int = 0

    def __post_init__(self):
        if self.random_paths < 0 or (self.random_paths == 0 and not self.sandwich):
            raise ValueError("a step needs at least one path: random_paths >= 1 or sandwich")
        if self.distill and not self.sandwich:
            raise ValueError("distill learns from the largest path, which only the sandwich rule runs")


def task_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the labels (per-token logits (B, N, V) or pooled (B, V))."""
    if logits.dim() == 3:
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
    return F.cross_entropy(logits, y)


def distill_loss(logits: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the teacher's soft labels, over the positions that have a label."""
    if logits.dim() == 3:
        keep = y.flatten() != IGNORE_INDEX
        logits, teacher = logits.flatten(0, 1)[keep], teacher.flatten(0, 1)[keep]
    return -(teacher.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()


class SupernetTraining:
    """Train ``supernet`` on ``task``'s train split. ``on_step(step, loss, archs)`` is called after
    each step (``step`` counts steps done; ``loss`` is the mean over the step's paths)."""

    def __init__(self, supernet: Supernet, task: Task, cfg: TrainConfig, paths: SupernetConfig = SupernetConfig(),
                 *, on_step: Optional[Callable[[int, float, list], None]] = None):
        self.net, self.cfg, self.paths, self.on_step = supernet, cfg, paths, on_step
        self.x, self.y = task.split("train")
        self.batch_gen = torch.Generator().manual_seed(paths.seed)
        self.path_gen = torch.Generator().manual_seed(paths.seed + 1)
        self.opt = torch.optim.AdamW(supernet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        space = supernet.space
        self.extremes = [extreme_arch(space, "largest"), extreme_arch(space, "smallest")] if paths.sandwich else []
        self.step = 0

    def archs(self) -> list:
        """This step's paths: the largest and smallest (sandwich) first, then random ones."""
        return self.extremes + [random_arch(self.net.space, self.path_gen) for _ in range(self.paths.random_paths)]

    def train_step(self) -> float:
        """One optimizer step over this step's paths; returns their mean loss."""
        idx = torch.randint(0, len(self.x), (self.cfg.batch_size,), generator=self.batch_gen)
        x, y = self.x[idx], self.y[idx]
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step, self.cfg)
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        archs, teacher, losses = self.archs(), None, []
        for i, arch in enumerate(archs):
            logits = self.net(x, arch)
            use_teacher = teacher is not None and self.paths.distill
            loss = distill_loss(logits, teacher, y) if use_teacher else task_loss(logits, y)
            if i == 0 and self.paths.distill:
                teacher = logits.detach()
            if not math.isfinite(loss.item()):
                raise NonFiniteLoss(f"supernet loss became {loss.item()} at step {self.step} ({arch.summary()})")
            (loss / len(archs)).backward()
            losses.append(loss.item())
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.step += 1
        mean = sum(losses) / len(losses)
        if self.on_step is not None:
            self.on_step(self.step, mean, archs)
        return mean

    def train_to(self, step: int, *, checkpoint: Optional[Path] = None, every: int = 0) -> None:
        """Train until ``step`` steps are done, saving to ``checkpoint`` every ``every`` steps and at the end."""
        while self.step < step:
            self.train_step()
            if checkpoint is not None and every and self.step % every == 0:
                self.save(checkpoint)
        if checkpoint is not None:
            self.save(checkpoint)

    def state_dict(self) -> dict:
        """Weights and training state, tensors and primitives only (``torch.load(weights_only=True)``)."""
        return {"step": self.step, "supernet": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                "batch_rng": self.batch_gen.get_state(), "path_rng": self.path_gen.get_state(),
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["supernet"])
        self.opt.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.batch_gen.set_state(state["batch_rng"])
        self.path_gen.set_state(state["path_rng"])
        torch.set_rng_state(state["torch_rng"])

    def save(self, path: Path) -> None:
        """Write the checkpoint to ``path`` atomically (a temporary file, then a rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def resume(self, path: Path) -> None:
        """Continue from the checkpoint at ``path``."""
        self.load_state_dict(torch.load(path, weights_only=True))
