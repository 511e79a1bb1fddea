"""Byte-level causal language modelling on real text, offline.

The corpus is ``path``: a folder (every regular, non-hidden file below it whose name matches
``pattern``, ``""`` = every file) or one file. Without ``path`` it is the Python standard
library's own ``.py`` sources, found through ``sysconfig.get_paths()["stdlib"]``: about 10 MB of
real code on every machine with Python, no download. Those files depend on the Python version
(3.11 and 3.12 differ), so two machines see the same corpus when they run the same version; left
out are what is not part of the standard library proper or not installed everywhere: the folders
``site-packages``, ``dist-packages``, ``__pycache__``, ``config-*``, the test suites (``test``,
``tests``, ``idle_test``) and the packages distributions ship separately (``idlelib``,
``tkinter``, ``turtledemo``, ``lib2to3``, ``distutils``, ``ensurepip``), and the build- or
site-specific files ``_sysconfigdata*.py``, ``sitecustomize.py`` and ``usercustomize.py``.

Splits are by file and deterministic: each file goes to test, validation or train by a SHA-256
hash of its path relative to the corpus root (``/``-separated), so the split does not depend on
the machine, the order ``os.listdir`` returns or the seed, and no file is in two splits. Within a
split, files are read in the order of that hash and concatenated as raw bytes, up to
``train_bytes`` / ``val_bytes`` / ``test_bytes`` (0 = all; the caps keep a CPU proxy cheap). A
single file is split by position instead: the first ``1 - val_fraction - test_fraction`` of its
bytes train, then validation, then test. Each split is cut into non-overlapping windows of
``context + 1`` bytes that share their edge byte: input the first ``context`` bytes, target the
next byte at every position, so every byte after the first is predicted once.

The proxy of a search reports on the validation split (``eval_split = "val"``): ``accuracy``
(next-byte accuracy) and ``bits_per_byte`` (mean cross-entropy in bits); the test split is held
out for the final evaluation of a chosen architecture.
"""

from __future__ import annotations

import fnmatch
import hashlib
import inspect
import math
import os
import stat
import sysconfig
from dataclasses import dataclass

import numpy as np
import torch

from evaluators.tasks.base import Task, register_task
from search_spaces.schema import Check, SettingError
from search_spaces.task_io import TaskIO

__all__ = ["Segment", "Corpus", "STDLIB_SKIP_DIRS", "STDLIB_SKIP_FILES", "find_corpus", "stdlib_root", "split_of",
           "read_segments", "byte_windows"]

SPLITS = ("train", "val", "test")
STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test",
                              "idlelib", "tkinter", "turtledemo", "lib2to3", "distutils", "ensurepip"})
STDLIB_SKIP_FILES = ("_sysconfigdata*", "sitecustomize.py", "usercustomize.py")
CONTEXT = Check(int, low=1, high=65536)
FRACTION = Check(float, above=0, below=1)
CAP = Check(int, low=0, what="an int >= 0 (bytes; 0 = the whole split)")


@dataclass(frozen=True)
class Segment:
    """Bytes ``start:end`` of the file ``path`` (absolute); ``name`` is its corpus-relative path."""

    path: str
    name: str
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Corpus:
    """Where the text comes from and which bytes each split reads, in reading order."""

    root: str
    splits: dict  # split -> tuple[Segment, ...]
    by_position: bool  # one file, split by position rather than by file

    def bytes_in(self, split: str, cap: int = 0) -> int:
        total = sum(s.size for s in self.splits[split])
        return min(total, cap) if cap else total


def stdlib_root() -> str:
    """The standard library's folder of this Python (the default corpus)."""
    return sysconfig.get_paths()["stdlib"]


def split_of(name: str, val_fraction: float, test_fraction: float) -> tuple[str, float]:
    """The split of the file with corpus-relative path ``name``, and its hash in [0, 1)."""
    h = int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()[:8], "big") / 2.0 ** 64
    return ("test" if h < test_fraction else "val" if h < test_fraction + val_fraction else "train"), h


def _readable(path: str, shown: str) -> int:
    """The size of the regular file ``path``; SettingError (task.params.path) if it cannot be read."""
    try:
        info = os.stat(path)
    except OSError as e:
        raise SettingError("task.params.path", f"{shown} cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise SettingError("task.params.path", f"{shown} is not a regular file")
    if not os.access(path, os.R_OK):
        raise SettingError("task.params.path", f"{shown} cannot be read (permission denied)")
    return info.st_size


def _walk(root: str, pattern: str, stdlib: bool) -> list[tuple[str, str, int]]:
    """(absolute path, relative name, size) of the corpus files below ``root``, sorted by name."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (
            stdlib and (d in STDLIB_SKIP_DIRS or d.startswith("config-"))))
        for f in sorted(files):
            if f.startswith(".") or (pattern and not fnmatch.fnmatchcase(f, pattern)):
                continue
            if stdlib and any(fnmatch.fnmatchcase(f, p) for p in STDLIB_SKIP_FILES):
                continue
            path = os.path.join(dirpath, f)
            name = os.path.relpath(path, root).replace(os.sep, "/")
            out.append((path, name, _readable(path, path)))
    return sorted(out, key=lambda t: t[1])


def _by_position(path: str, size: int, val_fraction: float, test_fraction: float) -> dict:
    n_train = int(size * (1 - val_fraction - test_fraction))
    n_val = int(size * val_fraction)
    name = os.path.basename(path)
    cuts = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, size)}
    return {s: (Segment(path, name, a, b),) for s, (a, b) in cuts.items()}


def find_corpus(path: str = "", pattern: str = "", val_fraction: float = 0.1, test_fraction: float = 0.1) -> Corpus:
    """The corpus files and their splits (nothing is read but the folder listing and file sizes).
    SettingError naming ``task.params.<key>`` for a missing path, an unreadable file, a folder
    with no matching file, or fractions that leave no training data."""
    if val_fraction + test_fraction >= 1:
        raise SettingError("task.params.test_fraction", f"val_fraction + test_fraction = "
                                                        f"{val_fraction + test_fraction:g} leaves no training data "
                                                        f"(their sum must be < 1)")
    if pattern and not path:
        raise SettingError("task.params.pattern", f"{pattern!r} is not allowed without path (the default corpus "
                                                  f"is the standard library's .py files)")
    stdlib = not path
    root = os.path.abspath(os.path.expanduser(path)) if path else stdlib_root()
    if not os.path.exists(root) and not os.path.islink(root):
        raise SettingError("task.params.path", f"{path!r} does not exist (a text file or a folder of them; "
                                               f"omit path for the Python standard library's sources)")
    if not os.path.isdir(root):
        size = _readable(root, repr(path))
        return Corpus(root, _by_position(root, size, val_fraction, test_fraction), by_position=True)
    files = _walk(root, "*.py" if stdlib else pattern, stdlib)
    if not files:
        what = f"file matching {pattern!r}" if pattern else "file"
        raise SettingError("task.params.path", f"{path!r} holds no {what} (hidden files are skipped)")
    keyed = {s: [] for s in SPLITS}
    for abspath, name, size in files:
        split, h = split_of(name, val_fraction, test_fraction)
        keyed[split].append((h, name, Segment(abspath, name, 0, size)))
    return Corpus(root, {s: tuple(seg for *_, seg in sorted(v)) for s, v in keyed.items()}, by_position=False)


def read_segments(segments, cap: int = 0) -> np.ndarray:
    """The bytes of ``segments`` concatenated, at most ``cap`` of them (0 = all), as uint8."""
    parts, total = [], 0
    for seg in segments:
        if cap and total >= cap:
            break
        want = seg.size if not cap else min(seg.size, cap - total)
        try:
            with open(seg.path, "rb") as f:
                f.seek(seg.start)
                data = f.read(want)
        except OSError as e:
            raise ValueError(f"text: {seg.path} cannot be read ({e.strerror})") from None
        parts.append(np.frombuffer(data, dtype=np.uint8))
        total += len(data)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)


def byte_windows(buf: np.ndarray, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows of ``context + 1`` bytes sharing their edge byte: inputs (n, context)
    and next-byte targets (n, context), int64, n = (len(buf) - 1) // context."""
    n = (len(buf) - 1) // context
    idx = np.arange(n)[:, None] * context + np.arange(context + 1)  # (n, context + 1)
    w = torch.from_numpy(buf[idx].astype(np.int64))
    return w[:, :-1], w[:, 1:]


@register_task("text")
class Text(Task):
    """Next-byte prediction: x (B, context) bytes as ints 0..255, y (B, context) the next bytes."""

    splits = SPLITS
    eval_split = "val"
    reports = ("bits_per_byte",)

    @classmethod
    def io_for(cls, path: str = "", pattern: str = "", context: int = 128, val_fraction: float = 0.1,
               test_fraction: float = 0.1, train_bytes: int = 1 << 20, val_bytes: int = 1 << 17,
               test_bytes: int = 1 << 17) -> TaskIO:
        CONTEXT.coerce(context, "task.params.context")
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            FRACTION.coerce(value, f"task.params.{key}")
        caps = {"train": train_bytes, "val": val_bytes, "test": test_bytes}
        for split, cap in caps.items():
            CAP.coerce(cap, f"task.params.{split}_bytes")
        corpus = find_corpus(path, pattern, val_fraction, test_fraction)
        for split, cap in caps.items():
            if corpus.bytes_in(split, cap) < context + 1:
                key = f"{split}_bytes" if corpus.bytes_in(split, cap) < corpus.bytes_in(split) else "path"
                raise SettingError(f"task.params.{key}", _too_small(corpus, split, cap, context))
        return TaskIO(kind="tokens", num_classes=256, seq_len=context, vocab_size=256, causal=True, per_token=True,
                      metric="bits_per_byte")

    def _generate(self) -> dict:
        p = {**_defaults(), **self.params}
        corpus = find_corpus(p["path"], p["pattern"], p["val_fraction"], p["test_fraction"])
        return {s: byte_windows(read_segments(corpus.splits[s], p[f"{s}_bytes"]), p["context"]) for s in SPLITS}

    def scores(self, accuracy: float, loss: float) -> dict:
        return {"bits_per_byte": loss / math.log(2)}

    @classmethod
    def chance(cls, io: TaskIO) -> dict:
        """A uniform guess over the 256 byte values: 1/256 accuracy, 8 bits per byte."""
        return {**super().chance(io), "bits_per_byte": math.log2(io.num_classes)}


def _defaults() -> dict:
    sig = inspect.signature(Text.io_for)
    return {k: v.default for k, v in sig.parameters.items()}


def _too_small(corpus: Corpus, split: str, cap: int, context: int) -> str:
    have = corpus.bytes_in(split, cap)
    where = (f"the {split} part of {corpus.root}" if corpus.by_position
             else f"the {split} split of {corpus.root} ({len(corpus.splits[split])} files)")
    if have < corpus.bytes_in(split):  # the cap is what limits it
        allowed = f"{split}_bytes >= {context + 1}"
    else:
        fraction = "smaller val_fraction and test_fraction" if split == "train" else f"larger {split}_fraction"
        allowed = f"a larger corpus, a {fraction} or a shorter context"
    return f"{where} gives {have} bytes, fewer than context + 1 = {context + 1} (allowed: {allowed})"
