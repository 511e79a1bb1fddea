"""mixer-nas: neural architecture search for efficient transformer token mixers.

    import nas
    df = nas.search("tiny", study="demo", trials=8)  # a built-in space, a YAML path or a dict
    df = nas.resume("demo", trials=16)               # raise the budget, go on
    df = nas.confirm("demo")                         # the front again: more seeds, one paired timing
    df = nas.load_trials("sqlite:///results/demo.db", "demo")
    front = nas.pareto_front(df)
    nas.list_studies()                               # the studies in results/*.db (or a storage)
    model = nas.load_model("runs/s-3")    # a `nas train` folder (torch and timm imported on first use)
    text = nas.generate(model, "def ", 200)

``__all__`` is the public surface of the package; the names the CLI's modules export beyond it
(``nas.store.study``, ``nas.engine.config``, ...) are for the engine and its tests.
"""

from nas.errors import UserError

__all__ = ["UserError", "confirm", "delete_study", "generate", "hypervolume", "hypervolume_history", "list_studies", "load_model",
           "load_trials", "pareto_front", "pareto_mask", "resume", "search", "__version__"]

# imported on first use, so `import nas` (and every `nas` command) starts without them: nas.results.trials
# and nas.results.volume (pandas, optuna), nas.api and nas.store.catalog (optuna), model_io and textgen (torch)
_LAZY = {"load_trials": "nas.results.trials", "pareto_front": "nas.results.trials", "pareto_mask": "nas.results.trials",
         "hypervolume": "nas.results.volume", "hypervolume_history": "nas.results.volume",
         "search": "nas.api", "resume": "nas.api", "confirm": "nas.api", "delete_study": "nas.api", "list_studies": "nas.store.catalog",
         "load_model": "nas.models.loading", "generate": "nas.models.textgen"}


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("mixer-nas")
    except metadata.PackageNotFoundError:  # a source tree that was never installed: say so, do not guess
        return "0+unknown"


def __getattr__(name: str):
    if name == "__version__":
        value = _version()
    elif name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'nas' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | {"__version__"})
