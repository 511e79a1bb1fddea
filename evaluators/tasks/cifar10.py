"""CIFAR-10 read from a local directory in the standard "python version" format (never downloaded).

``root`` holds ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``: pickled dicts with
``b"data"``, a uint8 array (n, 3072) of row-major 32x32 images, red then green then blue planes,
and ``b"labels"``, n ints in 0..9. The files are read with a restricted unpickler that accepts
only the plain containers and numpy arrays the format uses, so a foreign pickle cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import torch

from evaluators.tasks.base import Task, register_task
from search_spaces.failures import failure_reason
from search_spaces.task_io import TaskIO

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
# per-channel mean and std of the CIFAR-10 training set (RGB, pixels scaled to [0, 1])
MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)

_ALLOWED = {
    ("_codecs", "encode"),  # bytes in protocol-2 pickles
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]  # pickles written by numpy < 2
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def _read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (uint8 (n, 3, 32, 32), int64 (n,)); ValueError naming the file if malformed."""
    try:
        with open(path, "rb") as f:
            d = _Unpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any unreadable file is one user error
        raise ValueError(f"cifar10: {path} is not a CIFAR-10 python batch ({failure_reason(e)})") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        keys = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"cifar10: {path} lacks b'data' and b'labels' (found {keys})")
    data, labels = d[b"data"], np.asarray(d[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"cifar10: {path}: b'data' must be uint8 (n, 3072), got {what}")
    ok = labels.shape == (len(data),) and np.issubdtype(labels.dtype, np.integer)
    if not ok or (len(labels) and (labels.min() < 0 or labels.max() > 9)):
        raise ValueError(f"cifar10: {path}: b'labels' must be {len(data)} ints in 0..9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


@register_task("cifar10")
class CIFAR10(Task):
    """Image classification on CIFAR-10 from ``root``: x (B, 3, 32, 32) float, y (B,) long.

    ``n_train`` / ``n_test`` (None: all 50000 / 10000) take a seeded random subset of each split.
    Pixels are scaled to [0, 1] and standardized per channel with the usual CIFAR-10 statistics.
    A missing directory or file raises ValueError as soon as the task is made; a malformed file
    when the data is first read. Full data in float32 takes about 0.7 GB.
    """

    @classmethod
    def io_for(cls, root: str = "data/cifar-10-batches-py", n_train: int | None = None,
               n_test: int | None = None) -> TaskIO:
        for name, n, cap in (("n_train", n_train, 50000), ("n_test", n_test, 10000)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= cap):
                raise ValueError(f"cifar10: {name} must be an int in 1..{cap} or None, got {n!r}")
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise ValueError(f"cifar10: data directory {root} does not exist (expected the CIFAR-10 "
                             f"python batches: {', '.join(TRAIN_FILES)}, {TEST_FILE})")
        missing = [f for f in (*TRAIN_FILES, TEST_FILE) if not os.path.isfile(os.path.join(root, f))]
        if missing:
            raise ValueError(f"cifar10: data directory {root} lacks {', '.join(missing)}")
        return TaskIO(kind="image", num_classes=10, image_size=(32, 32), in_channels=3, causal=False)

    def _split(self, split: str, files: tuple, rng) -> tuple[torch.Tensor, torch.Tensor]:
        root = os.fspath(self.params.get("root", "data/cifar-10-batches-py"))
        n = self.params.get(f"n_{split}")
        parts = [_read_batch(os.path.join(root, f)) for f in files]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        if n is not None:
            if n > len(y):
                raise ValueError(f"cifar10: {root} has {len(y)} {split} samples, fewer than n_{split}={n}")
            keep = np.sort(rng.permutation(len(y))[:n])
            x, y = x[keep], y[keep]
        x = (x.astype(np.float32) / 255.0 - MEAN[:, None, None]) / STD[:, None, None]
        return torch.from_numpy(x), torch.from_numpy(y)

    def _generate(self) -> dict:
        rng = np.random.default_rng(self.seed)
        return {
            "train": self._split("train", TRAIN_FILES, rng),
            "test": self._split("test", (TEST_FILE,), rng),
        }
