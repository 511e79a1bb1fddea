"""Backends run trials against one study. Each module here exposes
``run(study, config, *, progress=None, log=print) -> int`` (trials run by this call):
``local`` (one process, the CI path) and ``ray`` (Ray Tune, parallel)."""

import pkgutil


def list_backends() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
