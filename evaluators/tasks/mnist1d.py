"""MNIST-1D (Greydanus 2020): 1-D signals of the ten digit templates, shifted, scaled, sheared,
noised; generated locally with ``mnist1d.data.make_dataset`` (never downloaded)."""

from __future__ import annotations

import torch

from evaluators.tasks.base import Task, register_task
from search_spaces.task_io import TaskIO


@register_task("mnist1d")
class MNIST1D(Task):
    @classmethod
    def io_for(cls, num_samples: int = 5000, train_split: float = 0.8) -> TaskIO:
        if num_samples < 20:
            raise ValueError(f"mnist1d: num_samples must be >= 20, got {num_samples}")
        if not 0 < train_split < 1:
            raise ValueError(f"mnist1d: train_split must be in (0, 1), got {train_split}")
        return TaskIO(kind="signal", num_classes=10, seq_len=40, in_channels=1, causal=False)

    def _generate(self) -> dict:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.seed = self.seed
        args.num_samples = self.params.get("num_samples", 5000)
        args.train_split = self.params.get("train_split", 0.8)
        d = make_dataset(args)  # local generation; get_dataset() would try to download
        return {
            "train": (torch.tensor(d["x"], dtype=torch.float32)[:, None, :], torch.tensor(d["y"], dtype=torch.long)),
            "test": (torch.tensor(d["x_test"], dtype=torch.float32)[:, None, :], torch.tensor(d["y_test"], dtype=torch.long)),
        }
