"""A per-device read/write lock across processes, so latency is timed on a quiet device.

Training steps hold the lock *shared*; a latency measurement holds it *exclusive*, so while one
trial is being timed no other trial on the same machine trains (and no two are timed at once).
It is built on ``fcntl.flock`` over two files in a directory local to the machine:

- ``<device>.lock``: shared by trainers, exclusive for a measurement;
- ``<device>.turnstile``: a measurement takes it exclusive before waiting on the main lock, and
  trainers pass through it (take it shared, drop it) before re-taking theirs, so a waiting
  measurement is not starved by trainers that overlap each other.

flock locks belong to the open file and vanish when the process dies, so a killed worker never
leaves the device locked. Linux/macOS only (fcntl).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import time
from pathlib import Path

__all__ = ["DeviceLock", "MODES", "default_lock_dir"]

MODES = ("rw", "mutex", "none")  # pause training while timing | serialize timing only | no lock


def default_lock_dir() -> Path:
    return Path(os.environ.get("MIXER_NAS_LOCK_DIR") or Path(tempfile.gettempdir()) / "mixer-nas-locks")


class DeviceLock:
    """One process's handle on the lock of ``device`` (e.g. ``cpu``, ``cuda:0``).

    ``mode="rw"``: :meth:`hold_shared` / :meth:`yield_shared` around training, :meth:`exclusive`
    around timing. ``mode="mutex"``: only timing is serialized (training is never paused).
    ``mode="none"``: every call is a no-op.
    """

    def __init__(self, device: str = "cpu", mode: str = "rw", lock_dir: str | os.PathLike | None = None):
        if mode not in MODES:
            raise ValueError(f"lock mode {mode!r} is not one of {list(MODES)}")
        self.mode = mode
        self._shared = False
        self.waited_s = 0.0  # time this handle spent blocked on the lock (trainers and measurements)
        self.waited_exclusive_s = 0.0  # the part of it a measurement spent waiting for trainers to drain
        if mode == "none":
            return
        d = Path(lock_dir) if lock_dir else default_lock_dir()
        d.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", device)
        self._main = os.open(d / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        self._gate = os.open(d / f"{name}.turnstile", os.O_RDWR | os.O_CREAT, 0o666)

    def close(self) -> None:
        if self.mode != "none":
            os.close(self._main)  # closing drops any lock held through it
            os.close(self._gate)
            self.mode = "none"

    # ----------------------------------------------------------------------- trainers
    def hold_shared(self) -> None:
        """Start training: wait for any measurement in progress or waiting, then hold shared."""
        if self.mode != "rw" or self._shared:
            return
        t0 = time.perf_counter()
        fcntl.flock(self._gate, fcntl.LOCK_SH)  # blocks while a measurement waits or runs
        fcntl.flock(self._gate, fcntl.LOCK_UN)
        fcntl.flock(self._main, fcntl.LOCK_SH)
        self.waited_s += time.perf_counter() - t0
        self._shared = True

    def release_shared(self) -> None:
        if self.mode == "rw" and self._shared:
            fcntl.flock(self._main, fcntl.LOCK_UN)
            self._shared = False

    def yield_shared(self) -> None:
        """Between training steps: let a waiting measurement in, then hold shared again. Costs
        two system calls when nobody waits."""
        if self.mode != "rw" or not self._shared:
            return
        try:  # cheap check: is a measurement waiting at the turnstile?
            fcntl.flock(self._gate, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(self._gate, fcntl.LOCK_UN)
            return
        except BlockingIOError:
            pass
        self.release_shared()
        self.hold_shared()

    @contextlib.contextmanager
    def released(self):
        """Give up this process's shared hold while inside (waiting on something elsewhere), and
        take it again after if it was held."""
        was_shared = self._shared
        self.release_shared()
        try:
            yield self
        finally:
            if was_shared:
                self.hold_shared()

    @contextlib.contextmanager
    def shared(self):
        self.hold_shared()
        try:
            yield self
        finally:
            self.release_shared()

    # ----------------------------------------------------------------------- measurements
    @contextlib.contextmanager
    def exclusive(self):
        """Hold the device alone (drops this process's shared hold while inside, re-takes it after)."""
        if self.mode == "none":
            yield self
            return
        was_shared = self._shared
        self.release_shared()
        t0 = time.perf_counter()
        fcntl.flock(self._gate, fcntl.LOCK_EX)  # new trainers now wait at the turnstile
        try:
            fcntl.flock(self._main, fcntl.LOCK_EX)  # running trainers drain at their next step
            waited = time.perf_counter() - t0
            self.waited_s += waited
            self.waited_exclusive_s += waited
            try:
                yield self
            finally:
                fcntl.flock(self._main, fcntl.LOCK_UN)
        finally:
            fcntl.flock(self._gate, fcntl.LOCK_UN)
        if was_shared:
            self.hold_shared()
