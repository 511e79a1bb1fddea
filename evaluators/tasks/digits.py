"""scikit-learn's handwritten digits: 8x8 grayscale images of 0-9 (1797 samples, UCI optdigits
test set), shipped with scikit-learn, so the task is offline. A seeded split into train and test."""

from __future__ import annotations

import numpy as np
import torch

from evaluators.tasks.base import Task, register_task
from search_spaces.task_io import TaskIO


@register_task("digits")
class Digits(Task):
    """Image classification on ``sklearn.datasets.load_digits``: x (B, 1, 8, 8) float, y (B,) long.

    The samples are shuffled with ``seed`` and the last ``test_fraction`` of them form the test
    split. Pixels (0..16) are standardized with the mean and standard deviation of the train split.
    """

    @classmethod
    def io_for(cls, test_fraction: float = 0.2) -> TaskIO:
        if not 0 < test_fraction < 1:
            raise ValueError(f"digits: test_fraction must be in (0, 1), got {test_fraction}")
        return TaskIO(kind="image", num_classes=10, image_size=(8, 8), in_channels=1, causal=False)

    def _generate(self) -> dict:
        from sklearn.datasets import load_digits

        d = load_digits()
        x = d.images.astype(np.float32)[:, None]  # (1797, 1, 8, 8), values 0..16
        y = d.target.astype(np.int64)
        order = np.random.default_rng(self.seed).permutation(len(y))
        n_test = max(1, int(round(len(y) * self.params.get("test_fraction", 0.2))))
        train, test = order[:-n_test], order[-n_test:]
        mean, std = x[train].mean(), x[train].std()
        x = (x - mean) / std
        return {
            "train": (torch.from_numpy(x[train]), torch.from_numpy(y[train])),
            "test": (torch.from_numpy(x[test]), torch.from_numpy(y[test])),
        }
