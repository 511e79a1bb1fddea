"""mixer-nas: neural architecture search for efficient transformer token mixers.

    import nas
    df = nas.load_trials("sqlite:///results/demo.db", "demo")
    front = nas.pareto_front(df)
"""

from nas.results import load_trials, pareto_front, pareto_mask
from nas.hypervolume import hypervolume, hypervolume_history

__all__ = ["load_trials", "pareto_front", "pareto_mask", "hypervolume", "hypervolume_history"]
__version__ = "0.1.0"
