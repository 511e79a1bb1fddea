"""The Ray backend: trials in parallel on Ray Tune workers, one Optuna study as the system of record.

The driver (this process) asks trials from the study, samples their architectures and tells their
results; Ray Tune workers only evaluate an ArchSpec and report the training loss every few steps,
which an ASHA scheduler uses to stop weak candidates (recorded PRUNED with ``pruned_at_step``).
Workers never open the study, so SQLite is safe with any number of workers of one driver; several
drivers (machines) share a study through PostgreSQL. See docs/ray.md.

Options (``config.extra``, set by ``nas search`` flags or the Python API):

``ray_address``       connect to this cluster (``auto``, ``HOST:6379``); none: start a local Ray
                      (object store capped at ``object_store_mb``) and shut it down after
``cpus_per_trial``    CPUs per trial, also its torch threads [1]
``gpus_per_trial``    GPUs per trial [0]
``asha``              early stopping on/off [True]
``asha_grace_steps``  training steps before a trial can be stopped [a quarter of the steps]
``asha_reduction``    ASHA reduction factor [3]
``report_every``      steps between reports to the scheduler [a tenth of the steps]
``latency_lock``      ``rw``: training pauses while a trial on the same machine is timed;
                      ``mutex``: timings are serialized, training goes on; ``none`` [rw]
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Optional

import optuna

from nas.engine import interrupts
from nas.engine.backends import register_backend
from nas.engine.backends.placement import check_cluster, local_gpus
from nas.engine.budget import report_running
from nas.engine.config import SearchConfig
from nas.engine.progress import Progress
from nas.errors import UserError
from nas.store.latency_tables import worker_url
from search_spaces.failures import first_line

__all__ = ["DEFAULTS", "run", "ray_options"]

DEFAULTS = {"ray_address": None, "cpus_per_trial": 1, "gpus_per_trial": 0, "asha": True,
            "asha_grace_steps": None, "asha_reduction": 3, "report_every": None, "latency_lock": "rw",
            "object_store_mb": 100}


def ray_options(config: SearchConfig) -> dict:
    unknown = set(config.extra) - set(DEFAULTS) - {"population_size"}
    opts = {**DEFAULTS, **{k: v for k, v in config.extra.items() if k in DEFAULTS and v is not None}}
    from nas.engine.device_lock import MODES

    if opts["latency_lock"] not in MODES:
        raise UserError(f"latency_lock: {opts['latency_lock']!r} is not one of {list(MODES)}")
    if float(opts["cpus_per_trial"]) <= 0 or float(opts["gpus_per_trial"]) < 0:
        raise UserError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    opts["unknown"] = sorted(unknown)
    return opts


def _start_ray(config: SearchConfig, opts: dict, log) -> bool:
    """Connect to or start Ray; True when this call started it (and must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    kw = dict(log_to_driver=False, logging_level="ERROR", configure_logging=True)
    if opts["ray_address"]:
        try:
            ray.init(address=opts["ray_address"], **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"cannot connect to Ray at {opts['ray_address']}: {first_line(e)}") from None
        return True
    ray.init(address="local",  # a new instance, even where `ray start` left a cluster running
             num_cpus=max(1, int(round(config.workers * float(opts["cpus_per_trial"])))),
             num_gpus=local_gpus(config.load_space(), int(round(config.workers * float(opts["gpus_per_trial"])))),
             object_store_memory=int(opts["object_store_mb"]) * 1024 * 1024,
             include_dashboard=False, **kw)
    return True


@register_backend("ray")
def run(study: optuna.Study, config: SearchConfig, *, progress: Optional[Progress] = None, log=print) -> int:
    """Run trials on Ray Tune until ``budget_count(study) >= config.trials`` (or the timeout).
    Returns the number of trials this call finished. Ctrl-C: trials in flight are recorded FAIL
    (``interrupted``), queued again, and KeyboardInterrupt propagates."""
    import ray

    from nas.engine.backends.ray_searcher import StudySearcher

    opts = _checked_options(config, log)
    for name, value in (("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1"), ("RAY_AIR_NEW_OUTPUT", "0"),
                        ("TUNE_MAX_PENDING_TRIALS_PG", str(max(1, config.workers)))):
        os.environ.setdefault(name, value)
    steps = config.eval_settings().train.steps
    # intermediate reports only feed the scheduler: without ASHA each would cost a round trip
    every = int(opts["report_every"] or max(1, steps // 10)) if opts["asha"] else steps
    trainable_cfg, scheduler = _trainable_config(config, opts, every), _scheduler(opts, steps, every)
    started = _connect(study, config, opts, log)
    searcher = StudySearcher(study, config, trainable_cfg, progress=progress, log=log)
    try:
        _fit(config, opts, searcher, scheduler)
        # Tune ends its run early on a Ctrl-C (its own handler) or when its loop caught our stop signal
        stop = interrupts.received() or KeyboardInterrupt()
        if searcher.abandon_live(stop) or interrupts.received():
            raise stop
    except KeyboardInterrupt as e:  # Tune may re-raise a SIGTERM as a plain KeyboardInterrupt
        stop = interrupts.received() or e
        searcher.abandon_live(stop)
        raise stop from None  # the stop signal says what happened; its KeyboardInterrupt adds nothing
    finally:
        searcher.close()
        if started:
            ray.shutdown()
    return searcher.ran


def _checked_options(config: SearchConfig, log) -> dict:
    """The backend's options; a space with a proxy ladder is refused (ASHA stops trials here)."""
    if config.eval_settings().ladder:
        raise UserError(f"space {config.space!r} has a proxy ladder, which the local backend runs; on the ray "
                        "backend early stopping comes from ASHA: remove `ladder:` or use --backend local")
    opts = ray_options(config)
    if opts["unknown"]:
        log(f"ray backend: ignoring unknown options {opts['unknown']}")
    if opts["ray_address"] and config.storage.startswith("sqlite"):
        log("note: SQLite storage is written by this driver only; to share the study between "
            "machines (several drivers), use a PostgreSQL URL (see docs/ray.md)")
    return opts


def _trainable_config(config: SearchConfig, opts: dict, every: int) -> dict:
    """What every worker gets with its trial (see nas/engine/backends/ray_worker.py)."""
    return {"space": config.space, "space_yaml": config.space_yaml, "seed": config.seed,
            "threads": max(1, int(float(opts["cpus_per_trial"]))), "report_every": every,
            "lock_mode": opts["latency_lock"], "plugins": list(config.plugins),
            # block latency tables (evaluators/predictor.py), where workers can reach them
            "latency_tables": worker_url(config.storage, remote_workers=bool(opts["ray_address"]))}


def _scheduler(opts: dict, steps: int, every: int):
    """ASHA over the reported training loss, or first-in first-out without early stopping."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from nas.engine.backends.ray_searcher import METRIC, MODE

    if opts["asha"] and steps > every:
        return ASHAScheduler(time_attr="step", metric=METRIC, mode=MODE, max_t=steps,
                             grace_period=int(opts["asha_grace_steps"] or max(every, steps // 4)),
                             reduction_factor=float(opts["asha_reduction"]))
    return FIFOScheduler()


def _connect(study: optuna.Study, config: SearchConfig, opts: dict, log) -> bool:
    """Start or join Ray, check it can hold the study's profiles, and let stale trials age out;
    True when this call started Ray (and must shut it down)."""
    import ray

    # Ray starts first, so its start-up overlaps the wait for stale trials' heartbeats to age out
    started = _start_ray(config, opts, log)
    interrupts.reinstall()  # ray.init sets a SIGTERM handler of its own: SIGTERM stops as Ctrl-C does
    try:
        check_cluster(config.load_space(), ray.cluster_resources())  # a GPU for each CUDA profile
        report_running(study, config, log=log)
    except BaseException:
        if started:
            ray.shutdown()
        raise
    return started


def _fit(config: SearchConfig, opts: dict, searcher, scheduler) -> None:
    """One Tune run: the searcher asks and tells, the workers evaluate, until the budget is spent."""
    from ray import tune

    from nas.engine.backends.ray_searcher import WorkerFailureCallback
    from nas.engine.backends.ray_worker import evaluate_trial

    resources = {"cpu": float(opts["cpus_per_trial"]), "gpu": float(opts["gpus_per_trial"])}
    with tempfile.TemporaryDirectory(prefix="nas-ray-") as tmp:
        tuner = tune.Tuner(
            tune.with_resources(evaluate_trial, resources),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=-1,
                                        max_concurrent_trials=config.workers, reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"{config.study}-{int(time.time())}", storage_path=tmp, verbose=0,
                callbacks=[WorkerFailureCallback(searcher)],
                failure_config=tune.FailureConfig(max_failures=0),  # retries are ours (one per trial)
            ),
        )
        tuner.fit()
