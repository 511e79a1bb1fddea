"""Loading a trained model: ``nas.load_model(folder)``, the weights of a `nas train` folder in the
model its architecture builds, with timm's ``mixer_nas`` entry registered on the way (so
``timm.create_model("mixer_nas", ...)`` works afterwards)."""

from __future__ import annotations

import os
from pathlib import Path

from nas.errors import UserError
from nas.models.folder import (
    ARCH_FILE,
    TRAIN_FILE,
    WEIGHTS_FILE,
    PathLike,
    arch_and_io,
    check_finished,
    load_weights,
    read_json,
)
from search_spaces.arch import ArchValidationError
from search_spaces.failures import failure_reason

__all__ = ["load_model"]


def load_model(path: PathLike, *, device: str = "cpu", trust_code: bool = False):
    """The trained ``nn.Module`` of a `nas train` folder, with its weights, in eval mode, on
    ``device``. Plugins the run was made with (custom mixers) are loaded first. A ``.py`` plugin's
    code stored in the folder's train.json runs only if it is the user's own (the same file at its
    stored path) or with ``trust_code=True``: else a UserError, and nothing runs (a downloaded
    folder is someone else's code, as a pickle is)."""
    import nas.models.timm_entry  # noqa: F401  (registers timm's "mixer_nas" entry; imports timm)
    from nas.engine.study_plugins import check_trusted
    from search_spaces import build_model
    from search_spaces.plugins import PluginError, load_plugins

    if not isinstance(path, (str, os.PathLike)):
        raise UserError(f"path: {path!r} is not allowed (the --out folder of `nas train`)")
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder (expected the --out folder of `nas train`)")
    check_finished(folder)
    plugins = read_json(folder / TRAIN_FILE).get("plugins", [])
    check_trusted(plugins, trust_code=trust_code, owner=f"{folder / TRAIN_FILE}")
    try:
        load_plugins(plugins)
    except PluginError as e:
        raise UserError(f"{folder}: {e.message} (a plugin the model was trained with)") from None
    spec, io = arch_and_io(folder)
    try:
        model = build_model(spec, io)
    except ArchValidationError as e:  # arch.json edited by hand: a rule of the registry broken
        raise UserError(f"{folder / ARCH_FILE}: {e}") from None
    except (TypeError, ValueError, KeyError, RuntimeError) as e:  # e.g. the I/O in train.json edited by hand
        raise UserError(f"{folder}: cannot build the model of {ARCH_FILE} and {TRAIN_FILE} "
                        f"({failure_reason(e)})") from None
    load_weights(model, folder / WEIGHTS_FILE, device="cpu")
    try:
        return model.to(device).eval()
    except (RuntimeError, TypeError) as e:  # an unknown device, or one this machine lacks
        raise UserError(f"device: {device!r} is not allowed here ({failure_reason(e)})") from None
