"""A trained model on disk: the files of a `nas train` folder, and loading them back.

A folder written by `nas train` holds::

    arch.json          the ArchSpec (canonical JSON, as the study stores it)
    train.json         the run: task (name, params, data seed), its I/O, training settings, seed,
                       where the architecture came from (study and trial, or a file), plugins
    model.safetensors  the trained weights (a plain state dict)
    metrics.json       final metrics on the test split and costs measured on the trained model
    loss.png           the training loss curve
    checkpoint.pt      only while a run is unfinished: weights, optimizer, RNG states, step

``load_model(DIR)`` rebuilds the network from arch.json and the I/O in train.json, loads the
weights and returns it in eval mode. :mod:`nas.models.timm_entry` registers the same network with timm
(``timm.create_model("mixer_nas", arch=DIR, checkpoint_path=DIR/model.safetensors)``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Mapping, Union

from nas.errors import UserError
from search_spaces.failures import first_line
from search_spaces.unique_keys import load_json

__all__ = ["ARCH_FILE", "CHECKPOINT_FILE", "LOSS_FILE", "METRICS_FILE", "TRAIN_FILE", "WEIGHTS_FILE",
           "PathLike", "arch_and_io", "check_finished", "io_dict", "io_from_dict", "load_weights", "read_json", "save_weights",
           "write_atomic", "write_json"]

ARCH_FILE = "arch.json"
TRAIN_FILE = "train.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
LOSS_FILE = "loss.png"
CHECKPOINT_FILE = "checkpoint.pt"

PathLike = Union[str, os.PathLike]


def write_atomic(path: PathLike, write) -> None:
    """``write(tmp_path)`` then rename over ``path``: a reader (or a crash) never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: PathLike, data: Mapping) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def read_json(path: PathLike) -> dict:
    """The JSON object in ``path``; UserError naming the file when it is missing or malformed."""
    try:
        data = load_json(Path(path).read_text())  # a key given twice is refused
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: cannot be read as JSON ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def save_weights(model, path: PathLike) -> None:
    """The model's state dict as safetensors, written atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}

    def write(tmp):
        save_file(state, str(tmp), metadata={"format": "pt"})
        os.chmod(tmp, 0o644)  # as the other files of the folder (safetensors writes 0600)

    write_atomic(path, write)


def load_weights(model, path: PathLike, device: str = "cpu") -> None:
    """Load a safetensors state dict into ``model`` (every key must match); UserError naming the
    file when it is damaged (truncated, not safetensors) or holds weights of another model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device=device)
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: cannot be read as safetensors weights ({first_line(e)}); the file is damaged "
                        f"or truncated") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # torch lists every mismatch, one per line, after a header line
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise UserError(f"{path}: the weights do not fit the model its {ARCH_FILE} describes "
                        f"({lines[1] if len(lines) > 1 else first_line(e)})") from None


def io_from_dict(d: Mapping[str, Any]):
    """A TaskIO from its dict (``dataclasses.asdict``); UserError on unknown keys."""
    from search_spaces.task_io import TaskIO

    known = {f.name for f in fields(TaskIO)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise UserError(f"task I/O: unknown key {unknown[0]!r}; allowed: {sorted(known)}")
    return TaskIO(**d)


def _arch_from(arch):
    """An ArchSpec from an ArchSpec, a dict, a JSON string or a path to a JSON file."""
    from search_spaces import ArchSpec, ArchValidationError

    if isinstance(arch, ArchSpec):
        return arch
    try:
        if isinstance(arch, Mapping):
            return ArchSpec.from_dict(arch)
        if isinstance(arch, str) and arch.lstrip().startswith("{"):
            return ArchSpec.from_json(arch)
        return ArchSpec.from_dict(read_json(arch))
    except ArchValidationError as e:
        where = arch if isinstance(arch, os.PathLike) else "arch"  # a path: the file, as read_json names it
        raise UserError(f"{where}: {e}") from None


def arch_and_io(arch, io=None):
    """(ArchSpec, TaskIO) for building a model. ``arch``: a `nas train` folder (its arch.json and
    the I/O in its train.json), a path to an arch JSON file (with a train.json beside it, its I/O
    is used), a JSON string, a dict or an ArchSpec. ``io`` (a TaskIO or its dict) overrides the
    folder's; without a folder it is required."""
    from search_spaces.task_io import TaskIO

    train_json = None
    if isinstance(arch, (str, os.PathLike)) and not str(arch).lstrip().startswith("{"):
        p = Path(arch)
        if p.is_dir():
            p = p / ARCH_FILE
        arch = p
        if (p.parent / TRAIN_FILE).is_file():
            train_json = p.parent / TRAIN_FILE
    spec = _arch_from(arch)
    if io is None and train_json is not None:
        io = read_json(train_json).get("io")
    if io is None:
        raise UserError("no task I/O for the architecture: pass io= (a TaskIO or its dict), or a `nas train` folder")
    try:
        return spec, io if isinstance(io, TaskIO) else io_from_dict(io)
    except (TypeError, ValueError) as e:  # not a dict, or a value TaskIO refuses
        raise UserError(f"{f'{train_json}: io' if train_json else 'io'}: not a task I/O ({first_line(e)})") from None


def check_finished(folder: Path) -> None:
    if (folder / WEIGHTS_FILE).is_file():
        return
    if not (folder / TRAIN_FILE).is_file():
        raise UserError(f"{folder} is not a `nas train` folder (no {TRAIN_FILE})")
    raise UserError(f"{folder} holds no {WEIGHTS_FILE}: its training has not finished; run the same "
                    f"`nas train ... --out {folder}` again to resume it")


def io_dict(io) -> dict:
    """The JSON form of a TaskIO (``io_from_dict`` reads it back)."""
    d = asdict(io)
    d["image_size"] = list(d["image_size"])
    return d
