"""mixer-nas: neural architecture search for efficient transformer token mixers.

    import nas
    df = nas.load_trials("sqlite:///results/demo.db", "demo")
    front = nas.pareto_front(df)
    model = nas.load_model("runs/s-3")    # a `nas train` folder (torch and timm imported on first use)
    text = nas.generate(model, "def ", 200)
"""

from nas.results import load_trials, pareto_front, pareto_mask
from nas.hypervolume import hypervolume, hypervolume_history

__all__ = ["load_trials", "pareto_front", "pareto_mask", "hypervolume", "hypervolume_history", "load_model", "generate"]
__version__ = "0.1.0"

_LAZY = {"load_model": "nas.model_io", "generate": "nas.textgen"}  # import torch: only when used


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'nas' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
