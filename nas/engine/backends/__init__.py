"""Backends run trials against one study: ``run(study, config, *, progress=None, log=print) -> int``
(trials run by this call), registered by name: ``local`` (one process, the CI path) and ``ray``
(Ray Tune, parallel). A backend module registers its ``run`` with :func:`register_backend`."""

from kernels.registry import Registry

__all__ = ["BACKENDS", "get_backend", "list_backends", "register_backend"]

# the built-in backends are these modules (importing one does not import Ray)
BACKENDS = Registry("backend", builtins=("nas.engine.backends.local", "nas.engine.backends.ray"))


def register_backend(name: str):
    """Decorator: register ``run(study, config, *, progress=None, log=print) -> int`` as ``name``."""
    return BACKENDS.register(name)


def get_backend(name: str):
    """The ``run`` function of backend ``name``; UnknownName if there is none."""
    return BACKENDS.get(name)


def list_backends() -> list[str]:
    return BACKENDS.names()
