"""What a Ray Tune worker runs for one trial: evaluate an ArchSpec, report training loss per rung.

The worker never touches the Optuna study: it gets the architecture JSON, the evaluation
settings and the study's plugins (module names, or ``.py`` files' text, so a node needs no copy of
the user's files) from the driver, loads the plugins, and reports plain results back through
``ray.tune.report``:

- every ``report_every`` steps: ``{"step": s, "loss": mean loss of the last steps, "final": False}``
  (what the ASHA scheduler compares at its rungs);
- at the end: ``{"final": True, "metrics": JSON}`` or ``{"final": True, "error": reason}``.

A trial that ASHA stops never sends its final result; the driver records it as PRUNED.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time

from search_spaces.failures import failure_reason, trial_failure_reason

__all__ = ["evaluate_trial"]


@functools.lru_cache(maxsize=8)
def _settings(space: str, space_yaml: str, seed: int):
    """The evaluation settings of the study's space, read once per worker process."""
    from nas.engine.config import load_checked

    return load_checked(space, text=space_yaml).settings_for(seed)


def _predictor(settings, tables_url, lock):
    """Latency predictions for this trial: over the study storage's block latency tables when the
    worker can reach them (``nas.store.latency_tables.worker_url``), else over a table of its own; missing
    parts are timed holding the machine's CPU lock alone."""
    from evaluators.predictor import MemoryTable, Predictor, uses_prediction
    from nas.store.latency_tables import open_latency_table

    table = open_latency_table(tables_url) if tables_url and uses_prediction(settings) else MemoryTable()
    return Predictor(table, settings.latency, seed=settings.seed, lock=lock.exclusive)


def evaluate_trial(cfg: dict) -> None:
    import torch
    from ray import tune

    from evaluators.errors import TrialFailure
    from nas.engine.device_lock import DeviceLock
    from search_spaces import ArchSpec

    try:  # the study's plugins first (each once per worker process), from the text in cfg
        settings = _load(cfg)
    except Exception as e:  # e.g. a plugin module not installed on this node: the trial's reason
        tune.report({"step": 0, "loss": float("inf"), "final": True, "error": f"on {socket.gethostname()}: {failure_reason(e)}"})
        return
    arch = ArchSpec.from_json(cfg["arch"])
    torch.set_num_threads(max(1, int(cfg["threads"])))
    lock = DeviceLock(settings.latency.device, mode=cfg["lock_mode"])
    reporter = _Reporter(cfg, settings.train.steps, lock)
    node = _node()
    result = {"step": 0, "loss": float("inf"), "final": True}  # "worker" is added once the trial ends
    try:
        result.update(_evaluate(arch, settings, cfg, lock, reporter.on_step))
    except TrialFailure as e:
        result.update(step=reporter.reached, error=str(e))
    except (Exception, SystemExit) as e:  # building, training or timing crashed, or user code called sys.exit:
        if reporter.stopped_by_tune:  # Ray Tune stops a trial (ASHA) by sys.exit inside tune.report: let it
            raise
        result.update(step=reporter.reached, error=trial_failure_reason(e))  # a trial state, not a worker crash
    finally:
        node["lock_wait_s"] = round(lock.waited_s, 4)
        node["lock_wait_measure_s"] = round(lock.waited_exclusive_s, 4)  # of which: a measurement waiting
        node["ended"] = round(time.time(), 3)
        result["worker"] = json.dumps(node)
        lock.close()
    tune.report(result)


def _load(cfg: dict):
    """The study's plugins loaded, then the trial's evaluation settings."""
    from search_spaces.plugins import load_plugins

    load_plugins(cfg.get("plugins") or ())
    return _settings(cfg["space"], cfg["space_yaml"], int(cfg["seed"]))


def _node() -> dict:
    """Where the trial runs. started/ended (added at the end): wall-clock times (s since the epoch)
    at which the worker began and finished the trial; with the study's ask/tell times they show
    where a trial's time went outside the worker."""
    node = {"host": socket.gethostname(), "pid": os.getpid(), "started": round(time.time(), 3)}
    try:
        import ray

        node["ray_node"] = ray.get_runtime_context().get_node_id()
    except Exception:  # pragma: no cover - outside a Ray worker
        pass
    return node


class _Reporter:
    """The training's step callback: the mean loss of the last ``report_every`` steps goes to the
    scheduler; between steps a latency measurement waiting on this machine goes first."""

    def __init__(self, cfg: dict, steps: int, lock):
        self.every, self.steps, self.lock = max(1, int(cfg["report_every"])), steps, lock
        self.window: list[float] = []
        self.reached = 0  # steps done
        self.stopped_by_tune = False  # Ray Tune ended the trial (its scheduler stopped it): not user code

    def on_step(self, step: int, loss: float) -> None:
        from ray import tune

        self.reached = step + 1
        self.window.append(loss)
        if (step + 1) % self.every == 0 and step + 1 < self.steps:
            try:
                tune.report({"step": step + 1, "loss": sum(self.window) / len(self.window), "final": False})
            except SystemExit:  # how Ray Tune stops a function trainable it pruned
                self.stopped_by_tune = True
                raise
            self.window.clear()
        self.lock.yield_shared()  # a latency measurement waiting elsewhere goes first


def _evaluate(arch, settings, cfg: dict, lock, on_step) -> dict:
    """The trial's metrics (as JSON) and final loss, evaluated holding the machine's lock shared."""
    from evaluators.evaluation import evaluate
    from nas.engine.backends.placement import profile_runner

    with lock.shared():
        metrics = evaluate(arch, settings, on_step=on_step, latency_lock=lock.exclusive(),
                           measure_profile=profile_runner(settings, lock, plugins=cfg.get("plugins") or (),
                                                          lock_mode=cfg["lock_mode"]),
                           predictor=_predictor(settings, cfg.get("latency_tables"), lock))
    return {"step": settings.train.steps, "loss": float(metrics.get("final_loss", float("inf"))),
            "metrics": json.dumps({k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                                   for k, v in metrics.items()})}
