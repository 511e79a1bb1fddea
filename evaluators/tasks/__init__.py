"""Tasks: registered by name, offline, deterministic given a seed, each declaring its I/O.

A task class takes ``seed`` and its own keyword parameters (all with defaults), exposes ``io``
(a :class:`search_spaces.TaskIO`), ``split(name)`` -> ``(x, y)`` tensors for each of its ``splits``
("train" and "test", and "val" for tasks that hold the test split out, see :class:`Task`), and the
classmethod ``io_for(**params)`` that computes the I/O without generating data.
Per-token tasks mark positions without a target with ``IGNORE_INDEX`` in ``y``.
"""

# importing a task's module registers it (listops: ListOps; mad: the MAD suite)
from evaluators.tasks import arrays, cifar10, digits, listops, mad, mnist1d, mqar, text  # noqa: F401
from evaluators.tasks.base import IGNORE_INDEX, TASKS, Task, get_task, list_tasks, make_task, register_task, task_io_for

__all__ = ["TASKS", "IGNORE_INDEX", "Task", "get_task", "list_tasks", "make_task", "register_task", "task_io_for"]
