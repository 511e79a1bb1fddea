"""How a candidate is scored: tasks (data), proxy training, costs, latency, zero-cost proxies, metrics.

    import evaluators
    space = evaluators.load_space("tiny")              # a space file bound to its task's I/O
    checked = evaluators.read_space("tiny")            # ... with every setting checked, read once for a search
    evaluators.list_tasks()                            # registered task names
    task = evaluators.make_task("mqar", seed=0)        # a Task: io, split("train") -> (x, y)
    settings = evaluators.EvalSettings.from_space(space, seed=0)
    metrics = evaluators.evaluate(arch, settings)  # {metric: value}
    @evaluators.register_metric("test_loss", "minimize")  # a user metric: fn(model, task, settings)

The public names below are imported on first use (PEP 562): importing a light submodule
(``evaluators.errors``) does not import torch. Submodules keep their own ``__all__``.
"""

from kernels.lazy import lazy_exports

_EXPORTS = {
    "EvalSettings": "evaluators.evaluation",
    "evaluate": "evaluators.evaluation",
    "NonFiniteLoss": "evaluators.errors",
    "OutOfMemory": "evaluators.errors",
    "TrialFailure": "evaluators.errors",
    "LatencyConfig": "evaluators.latency",
    "measure_latency": "evaluators.latency",
    "CheckedSpace": "evaluators.spaces",
    "load_space": "evaluators.spaces",
    "read_space": "evaluators.spaces",
    "Metric": "evaluators.metrics",
    "register_metric": "evaluators.metrics",
    "resolve_metric": "evaluators.metrics",
    "Task": "evaluators.tasks",
    "get_task": "evaluators.tasks",
    "list_tasks": "evaluators.tasks",
    "make_task": "evaluators.tasks",
    "register_task": "evaluators.tasks",
    "TrainConfig": "evaluators.train",
    "train_proxy": "evaluators.train",
    "compute_zero_cost": "evaluators.zero_cost",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
