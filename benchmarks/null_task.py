"""The null evaluation: a task whose trial builds, trains and times nothing.

A plugin (``plugins: [null_task.py]`` in ``benchmarks/null.yaml``), not a default task: it exists
so that a benchmark of the engine (``benchmarks/engine_scale.py``) and the tests of the engine at
scale measure what the engine itself costs per trial (sampling, the budget's lock, heartbeats,
the duplicate-architecture lookup, storage writes, loading results) and nothing else.

Its metrics come from the architecture alone, deterministically: the same ``ArchSpec`` gets the
same values in every process and on every run. ``accuracy`` is a number in [0.5, 1) drawn from the
architecture's id (a hash, so it has no relation to quality), ``latency_ms`` and ``params`` grow
with the widths and depths, so a two-objective front exists and is not trivial.
"""

from __future__ import annotations

import hashlib

from evaluators.tasks.base import Task, register_task
from search_spaces.task_io import TaskIO


@register_task("null_eval")
class NullTask(Task):
    """Token sequences in and out (causal, per token), like ``mqar``, but never generated:
    :meth:`score_arch` replaces the model's training and timing."""

    @classmethod
    def io_for(cls, vocab_size: int = 32, seq_len: int = 16) -> TaskIO:
        return TaskIO(kind="tokens", num_classes=vocab_size, seq_len=seq_len, vocab_size=vocab_size,
                      causal=True, per_token=True)

    def _generate(self) -> dict:
        raise RuntimeError("the null task has no data: its architectures are scored by score_arch")

    def score_arch(self, arch) -> dict:
        """Deterministic metrics of ``arch`` (an ``ArchSpec``) from its spec alone."""
        digest = hashlib.sha256(arch.arch_id.encode()).digest()
        blocks = [(stage.dim, block.mixer.type) for stage in arch.stages for block in stage.blocks]
        params = sum(12 * dim * dim for dim, _ in blocks)
        return {"accuracy": 0.5 + int.from_bytes(digest[:4], "big") / 2**33,
                "latency_ms": 0.01 * sum(dim * (2 if mixer == "softmax" else 1) for dim, mixer in blocks) / 32,
                "params": float(params), "flops": float(params * self.io.seq_len)}
