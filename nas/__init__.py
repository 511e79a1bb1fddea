"""mixer-nas: neural architecture search for efficient transformer token mixers.

    import nas
    df = nas.load_trials("sqlite:///results/demo.db", "demo")
    front = nas.pareto_front(df)
"""

from nas.results import load_trials, pareto_front, pareto_mask

__all__ = ["load_trials", "pareto_front", "pareto_mask"]
__version__ = "0.1.0"
