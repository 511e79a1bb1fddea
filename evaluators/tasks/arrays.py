"""A user's own data as arrays: a ``.npz`` file (``numpy.savez``) holding ``x`` and ``y``.

What the model reads is inferred from ``x`` (channels first, as in PyTorch):

    x int   (N, L)          token sequences; ids >= 0, vocabulary max(x) + 1
    x float (N, L)          one-channel signals of length L
    x       (N, C, L)       signals with C channels (int or float values)
    x       (N, C, H, W)    images with C channels (uint8 pixels are fine); channels-last data:
                            ``np.moveaxis(x, -1, 1)`` before saving

and what it predicts from ``y`` (integers):

    y (N,)      one class per sample, classes 0 .. max(y)
    y (N, L)    with token x (N, L): one label per token (sequence labelling); a negative label
                marks a position without a target (not scored)

Classes and token ids are at most ``MAX_INDEX`` (2**20 - 1): the head has one output per class
and the embedding one row per id, so a stray label of 10**9 is refused naming the array and the
value, not left to fail as a model too large for the machine.

The test split is ``x_test`` / ``y_test`` when the file has them (same shapes but N); else a
seeded shuffle (``split_seed``, independent of the search's seed) puts ``test_fraction`` of the
samples in test. Float inputs are standardized per channel with the train split's mean and
standard deviation (``standardize: false`` keeps them as they are). Anything else is refused when
the space is loaded, with one line naming the file, the key, its shape and dtype, and what is
allowed. The task is not causal: the model sees whole sequences.
"""

from __future__ import annotations

import functools
import os
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

from evaluators.tasks.base import IGNORE_INDEX, Task, register_task
from search_spaces.failures import first_line
from search_spaces.schema import Check, SettingError
from search_spaces.task_io import TaskIO

__all__ = ["ArraysInfo", "inspect_arrays", "ALLOWED_X", "ALLOWED_Y", "MAX_INDEX"]

ALLOWED_X = ("int (N, L) token ids >= 0, float (N, L) or (N, C, L) signals, or (N, C, H, W) images "
             "(channels first)")
ALLOWED_Y = "ints (N,): a class per sample, or (N, L) with token x (N, L): a label per token"
PATH = "task.params.path"
FRACTION = Check(float, above=0, below=1)
MAX_INDEX = 2**20 - 1  # the largest class and token id: far beyond any label set or vocabulary in use


@dataclass(frozen=True)
class ArraysInfo:
    """What a ``.npz`` file holds, as the task reads it."""

    kind: str  # tokens | signal | image
    sample_shape: tuple  # x.shape[1:]
    n: int  # samples in x
    num_classes: int
    vocab_size: int = 0  # tokens
    per_token: bool = False
    has_test: bool = False  # x_test / y_test


def _fail(path: str, message: str):
    raise SettingError(PATH, f"{path}: {message}")


def _describe(key: str, a: np.ndarray) -> str:
    return f"{key} has shape {tuple(a.shape)} and dtype {a.dtype}"


def _kind_of(path: str, key: str, x: np.ndarray) -> str:
    """tokens, signal or image from the dtype and shape of ``x``; one-line error otherwise."""
    integer, floating = np.issubdtype(x.dtype, np.integer), np.issubdtype(x.dtype, np.floating)
    if not (integer or floating) or x.ndim not in (2, 3, 4) or 0 in x.shape:
        _fail(path, f"{_describe(key, x)}; allowed: {ALLOWED_X}")
    if floating and not np.isfinite(x).all():
        _fail(path, f"{_describe(key, x)} and holds NaN or inf; allowed: finite values")
    if integer and x.ndim == 2:
        if x.min() < 0:
            _fail(path, f"{_describe(key, x)} and holds a negative token id ({x.min()}); allowed: ids >= 0")
        return "tokens"
    return {2: "signal", 3: "signal", 4: "image"}[x.ndim]


def _check_labels(path: str, key: str, y: np.ndarray, x: np.ndarray, kind: str) -> bool:
    """Whether ``y`` labels every token (else every sample); one-line error if it fits neither."""
    per_token = kind == "tokens" and y.shape == x.shape
    if not np.issubdtype(y.dtype, np.integer) or (y.shape != x.shape[:1] and not per_token):
        _fail(path, f"{_describe(key, y)} for {_describe(key.replace('y', 'x'), x)}; allowed: {ALLOWED_Y}")
    if per_token and not (y >= 0).any():
        _fail(path, f"{_describe(key, y)} and every label is negative (no target); allowed: labels >= 0 to score")
    if not per_token and y.min() < 0:
        _fail(path, f"{_describe(key, y)} and holds a negative class ({y.min()}); allowed: classes >= 0")
    return per_token


def _check_index(path: str, key: str, a: np.ndarray, what: str, plural: str, why: str) -> None:
    """A class or token id above MAX_INDEX is refused here, naming the array and the value: the
    model would need a head or an embedding that large, and the memory check would blame a width."""
    top = int(a.max())
    if top > MAX_INDEX:
        _fail(path, f"{key} holds {what} {top}; allowed: {plural} 0 .. {MAX_INDEX} ({why})")


def _load(path: str) -> dict:
    """The arrays of the ``.npz`` at ``path`` (no pickles); one-line errors for a missing or
    unreadable file and for missing keys."""
    if not path:
        raise SettingError(PATH, "a .npz file is required (arrays x and y, optionally x_test and y_test)")
    if not os.path.isfile(path):
        _fail(path, f"{'is not a file' if os.path.exists(path) else 'does not exist'} (allowed: a .npz file with "
                    f"arrays x and y)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        _fail(path, f"cannot be read as a .npz file ({first_line(e)})")
    keys = sorted(arrays)
    for key in ("x", "y"):
        if key not in arrays:
            _fail(path, f"has no array {key!r} (it has {keys}); allowed: x and y, optionally x_test and y_test")
    if ("x_test" in arrays) != ("y_test" in arrays):
        _fail(path, f"has only one of x_test and y_test (it has {keys}); allowed: both or neither")
    return arrays


def _inspect(path: str) -> ArraysInfo:
    a = _load(path)
    x, y = a["x"], a["y"]
    kind = _kind_of(path, "x", x)
    per_token = _check_labels(path, "y", y, x, kind)
    xs, ys = [x], [y]
    if "x_test" in a:
        xt, yt = a["x_test"], a["y_test"]
        if _kind_of(path, "x_test", xt) != kind or xt.shape[1:] != x.shape[1:]:
            _fail(path, f"{_describe('x_test', xt)}, unlike {_describe('x', x)}; allowed: the shape of x but N")
        if _check_labels(path, "y_test", yt, xt, kind) != per_token:
            _fail(path, f"{_describe('y_test', yt)}, unlike {_describe('y', y)}; allowed: the shape of y but N")
        xs, ys = xs + [xt], ys + [yt]
    elif len(x) < 2:
        _fail(path, f"{_describe('x', x)}: one sample cannot be split into train and test; allowed: N >= 2")
    for key, v in zip(("y", "y_test"), ys):
        _check_index(path, key, v, "class", "classes",
                     "the model's head has one output per class: number the classes 0 .. K-1")
    if kind == "tokens":
        for key, v in zip(("x", "x_test"), xs):
            _check_index(path, key, v, "token id", "token ids",
                         "the model's embedding has one row per id: number the tokens 0 .. V-1")
    classes = int(max(v.max() for v in ys)) + 1
    if classes < 2:
        _fail(path, f"{_describe('y', y)} and holds only class 0; allowed: at least two classes")
    vocab = int(max(v.max() for v in xs)) + 1 if kind == "tokens" else 0
    return ArraysInfo(kind, tuple(x.shape[1:]), len(x), classes, vocab, per_token, "x_test" in a)


@functools.lru_cache(maxsize=8)
def _inspect_cached(path: str, mtime_ns: int, size: int) -> ArraysInfo:
    return _inspect(path)


def inspect_arrays(path: str) -> ArraysInfo:
    """What the ``.npz`` at ``path`` holds (cached while the file is unchanged); SettingError
    naming ``task.params.path``, the file, the key and its shape when the task cannot use it."""
    path = os.path.abspath(os.path.expanduser(path)) if path else ""
    if not path or not os.path.isfile(path):
        return _inspect(path)  # the one-line error
    info = os.stat(path)
    return _inspect_cached(path, info.st_mtime_ns, info.st_size)


def _io(info: ArraysInfo) -> TaskIO:
    if info.kind == "tokens":
        return TaskIO(kind="tokens", num_classes=info.num_classes, seq_len=info.sample_shape[0],
                      vocab_size=info.vocab_size, per_token=info.per_token)
    if info.kind == "signal":
        channels = info.sample_shape[0] if len(info.sample_shape) == 2 else 1
        return TaskIO(kind="signal", num_classes=info.num_classes, seq_len=info.sample_shape[-1],
                      in_channels=channels)
    return TaskIO(kind="image", num_classes=info.num_classes, image_size=info.sample_shape[1:],
                  in_channels=info.sample_shape[0])


@register_task("arrays")
class Arrays(Task):
    """Classification or sequence labelling on ``x`` / ``y`` from a ``.npz`` file (module docstring)."""

    @classmethod
    def io_for(cls, path: str = "", test_fraction: float = 0.2, split_seed: int = 0,
               standardize: bool = True) -> TaskIO:
        FRACTION.coerce(test_fraction, "task.params.test_fraction")
        Check(int, low=0).coerce(split_seed, "task.params.split_seed")
        info = inspect_arrays(path)
        if not info.has_test and not 1 <= _n_test(info.n, test_fraction) < info.n:
            raise SettingError("task.params.test_fraction", f"{test_fraction!r} of {info.n} samples leaves no "
                                                            f"train or no test sample")
        return _io(info)

    def _generate(self) -> dict:
        p = {"test_fraction": 0.2, "split_seed": 0, "standardize": True, **self.params}
        info = inspect_arrays(p["path"])
        a = _load(os.path.abspath(os.path.expanduser(p["path"])))
        if info.has_test:
            train, test = (a["x"], a["y"]), (a["x_test"], a["y_test"])
        else:
            order = np.random.default_rng(p["split_seed"]).permutation(info.n)
            n_test = _n_test(info.n, p["test_fraction"])
            keep_test, keep_train = np.sort(order[:n_test]), np.sort(order[n_test:])
            train = (a["x"][keep_train], a["y"][keep_train])
            test = (a["x"][keep_test], a["y"][keep_test])
        return _tensors(info, train, test, p["standardize"])


def _n_test(n: int, fraction: float) -> int:
    return int(round(n * fraction))


def _tensors(info: ArraysInfo, train: tuple, test: tuple, standardize: bool) -> dict:
    """(x, y) tensors per split: int64 ids, or float32 inputs with a channel axis (standardized
    per channel with the train split's statistics); int64 labels, IGNORE_INDEX where negative."""
    def inputs(x):
        if info.kind == "tokens":
            return torch.from_numpy(x.astype(np.int64))
        x = x.astype(np.float32)
        return torch.from_numpy(x[:, None] if x.ndim == 2 else x)  # (N, L) -> (N, 1, L)

    def labels(y):
        return torch.from_numpy(np.where(y < 0, IGNORE_INDEX, y).astype(np.int64))

    xs = {"train": inputs(train[0]), "test": inputs(test[0])}
    if info.kind != "tokens" and standardize:
        axes = [0] + list(range(2, xs["train"].dim()))  # all but the channel axis
        mean = xs["train"].mean(dim=axes, keepdim=True)
        std = xs["train"].std(dim=axes, keepdim=True, unbiased=False)
        std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel stays centred
        xs = {k: (v - mean) / std for k, v in xs.items()}
    return {"train": (xs["train"], labels(train[1])), "test": (xs["test"], labels(test[1]))}
