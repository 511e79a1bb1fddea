"""Run a search from Python; `nas search`, `nas resume` and `nas confirm` are these functions plus printing.

    import nas
    df = nas.search("tiny", study="demo", trials=8)   # a built-in space name, a YAML path or a dict
    df = nas.resume("demo", trials=16)                # raise the budget and go on
    df = nas.confirm("demo")                          # more seeds and a paired timing for the front
    front = nas.pareto_front(df)

Both return :func:`nas.load_trials` of the study once it has its budget (``df.attrs["storage"]``
says where it is). The storage is ``storage``, else ``$NAS_STORAGE``, else
``sqlite:///results/<study>.db`` (:func:`nas.engine.config.resolve_storage`). Everything is checked
before anything is written: bad input raises :class:`nas.UserError`, one line naming the file, key
or argument, the value and what is allowed. A stop signal (Ctrl-C; SIGTERM and SIGHUP stop it the
same way while a search runs) raises :class:`SearchStopped` once the running trial is recorded
and queued again, so :func:`resume` finishes the job. Messages go to the ``nas`` logger
(:mod:`nas.engine.logs`): notes at WARNING, the study line and each finished trial at INFO.
"""

from __future__ import annotations

import logging
import numbers
import os
import shlex
import signal
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Union

from nas.engine import interrupts
from nas.engine.config import SAMPLERS, SearchConfig, check_runs_here, load_checked, resolve_storage
from nas.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DICT_SOURCE", "SearchPlan", "SearchStopped", "confirm", "delete_study", "plan_search", "resume", "search"]

log = logging.getLogger("nas")

DICT_SOURCE = "<dict>"  # how a space given as a dict is named in messages and in its study
SpaceArg = Union[str, os.PathLike, Mapping]
ProgressFactory = Callable[[int], Any]  # budget -> a nas.engine.progress.Progress (a context manager)
_SETTINGS = {"trials": "trials", "workers": "workers", "timeout": "timeout", "heartbeat": "heartbeat_interval"}
SAMPLER_OPTIONS = ("population_size",)  # options= keys the sampler reads (nas.store.study.make_sampler)


class SearchStopped(KeyboardInterrupt):
    """A stop signal ended a search: its finished trials are saved and the interrupted one is
    queued again. ``signum`` is the signal (SIGINT for Ctrl-C); the message says how to resume.
    A KeyboardInterrupt, so code written for Ctrl-C handles it."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = int(signum)

    @classmethod
    def after(cls, e: BaseException, *, study: str, storage: str, finished: int, budget: int) -> "SearchStopped":
        """The stop ``e`` (a KeyboardInterrupt) of a search of ``study`` with ``finished`` of
        ``budget`` trials done: its message says how many and the command that resumes it."""
        n = interrupts.signal_number(e)
        how = "interrupted" if n == signal.SIGINT else f"terminated by {interrupts.describe(e)}"
        resume_cmd = f"nas resume --study {shlex.quote(study)} --storage {shlex.quote(storage)}"
        return cls(n, f"{how}: {finished}/{budget} trials finished and saved. Resume with:\n  {resume_cmd}")


@dataclass
class SearchPlan:
    """What :func:`search` would run, checked: the config it stores with the study, and the space
    read once (an :class:`evaluators.spaces.CheckedSpace`), which the config also holds."""

    config: SearchConfig
    checked: Any  # evaluators.spaces.CheckedSpace

    @property
    def space(self):
        """The ``search_spaces.Space``, validated and bound to its task."""
        return self.checked.space


def plan_search(space: SpaceArg, *, study: Optional[str], storage: Optional[str] = None,
                trials: Optional[int] = None, backend: str = "local", workers: int = 1,
                seed: Optional[int] = None, sampler: Optional[str] = None, plugins=None,
                timeout: Optional[float] = None, heartbeat: Optional[int] = None,
                options: Optional[Mapping] = None) -> SearchPlan:
    """Check what :func:`search` takes and build its config, running every check a search runs
    before it writes: the arguments, the plugins, the space, that its models fit this machine, the
    seed, and the storage (its URL and driver, that a new database could be made there, that a
    study of that name can take this search); nothing is written (`nas search --dry-run`)."""
    plan = _plan(space, study=study, storage=storage, trials=trials, backend=backend, workers=workers, seed=seed,
                 sampler=sampler, plugins=plugins, timeout=timeout, heartbeat=heartbeat, options=options)
    from nas.engine.study_plugins import check_same_plugins
    from nas.store.study import check_study

    stored = check_study(plan.config)
    if stored is not None:
        check_same_plugins(stored, plan.config)
    return plan


def _plan(space: SpaceArg, *, study: Optional[str], storage: Optional[str], trials: Optional[int], backend: str,
          workers: int, seed: Optional[int], sampler: Optional[str], plugins, timeout: Optional[float],
          heartbeat: Optional[int], options: Optional[Mapping]) -> SearchPlan:
    """The checks of :func:`plan_search` but the study's (which :func:`search` leaves to
    ``create_or_load_study``, under the study's lock), and the config, holding the space read."""
    _check_arguments(backend=backend, sampler=sampler, options=options, trials=trials, workers=workers, timeout=timeout,
                     heartbeat=heartbeat)
    from nas.engine.study_plugins import load_cli_plugins, study_plugins

    if study is None and isinstance(space, Mapping) and "name" not in space:
        raise UserError("study: None is not allowed for a space given as a dict without a name: key (name the study)")
    given = load_cli_plugins(plugins)  # before the space: it may name what they register
    checked = _load_space(space)
    check_runs_here(checked, backend)
    sp = checked.space
    name = sp.name if study is None else study
    beat = SearchConfig.heartbeat_interval if heartbeat is None else heartbeat
    config = SearchConfig(space=DICT_SOURCE if isinstance(space, Mapping) else os.fspath(space), space_yaml=sp.text,
                          study=name, storage=resolve_storage(name, storage), trials=trials or sp.trials,
                          sampler=sampler or SearchConfig.sampler, seed=0 if seed is None else seed, backend=backend,
                          workers=workers, timeout=timeout, heartbeat_interval=beat, grace_period=4 * beat,
                          extra=dict(options or {}), plugins=study_plugins(given, sp))
    config.use_space(checked)
    log.debug("space %s: task %s, plugins %s; study %s in %s", sp.source, sp.task.name,
              [p["name"] for p in config.plugins] or "none", name, config.storage)
    return SearchPlan(config, checked)


def search(space: SpaceArg, *, study: Optional[str], storage: Optional[str] = None, trials: Optional[int] = None,
           backend: str = "local", workers: int = 1, seed: Optional[int] = None, sampler: Optional[str] = None,
           plugins=None, timeout: Optional[float] = None, heartbeat: Optional[int] = None,
           options: Optional[Mapping] = None, baselines: bool = False,
           progress: Optional[ProgressFactory] = None) -> "pd.DataFrame":
    """Search ``space`` until study ``study`` has ``trials`` finished trials; returns its trials.

    ``space``: a built-in space name, a path to a space file, or a dict with a space file's keys
    (its ``plugins:`` paths are taken from the current directory). ``study``: None names it after
    the space. ``trials`` (default: the space's), ``sampler`` (tpe, nsga2, random, gp; default
    tpe), ``seed`` (default 0), ``backend`` (local, ray) and ``workers`` are those of a new
    study; an existing study keeps its own (a warning names what was ignored) and takes
    ``trials`` as its new budget (not below the trials it has finished). ``plugins``: module
    names or ``.py`` paths (a single one may be given alone) loaded first and stored with the
    study. ``options``: backend and sampler options stored with it (ray: ``ray_address``,
    ``cpus_per_trial``, ``gpus_per_trial``, ``asha``, ``latency_lock``, ...; see
    :mod:`nas.engine.backends.ray`; the sampler: ``population_size``); another key is refused. ``baselines``: also queue the literature designs sized to the
    space. ``progress``: ``f(budget)`` returning a :class:`nas.engine.progress.Progress` (default: one
    INFO line per finished trial on the ``nas`` logger)."""
    _check_arguments(seed=seed, flags={"baselines": baselines}, progress=progress)
    with interrupts.handling():
        plan = _plan(space, study=study, storage=storage, trials=trials, backend=backend, workers=workers,
                           seed=seed, sampler=sampler, plugins=plugins, timeout=timeout, heartbeat=heartbeat,
                           options=options)
        given = {"sampler": sampler, "seed": seed, "backend": backend, "workers": workers}
        st, config, created = _open(plan, given, trials=trials, timeout=timeout)
        if baselines:
            from nas.engine.baselines import enqueue_baselines

            queued = enqueue_baselines(st, plan.space, log=log.info)
            log.info(f"queued baselines: {', '.join(queued) or 'none (already in the study)'}")
        return _run(st, config, created, progress)


def resume(study: str, *, storage: Optional[str] = None, trials: Optional[int] = None,
           timeout: Optional[float] = None, progress: Optional[ProgressFactory] = None,
           trust_code: bool = False) -> "pd.DataFrame":
    """Continue ``study`` from its storage with its stored space, plugins, sampler and backend;
    ``trials`` is its new budget (kept for later resumes). Returns its trials, as :func:`search`.
    ``trust_code``: run stored plugin code that is not on this machine (someone else's study);
    without it such a study is a UserError and nothing runs."""
    from nas.store.study import load_study, save_budget

    _check_arguments(trials=trials, timeout=timeout, progress=progress)
    with interrupts.handling():
        st, config = load_study(resolve_storage(study, storage), study, writable=True)
        check_runs_here(config.checked_space(trust_code=trust_code), config.backend)  # this machine may lack the memory or the CUDA device
        save_budget(st, config, trials)
        config.timeout = timeout
        return _run(st, config, False, progress)


def confirm(study: str, *, storage: Optional[str] = None, seeds: Optional[int] = None, rounds: Optional[int] = None,
            new_pass: bool = False, trust_code: bool = False,
            progress: Optional[ProgressFactory] = None) -> "pd.DataFrame":
    """Confirm ``study``'s front (:mod:`nas.engine.confirm`): train the front and every trial that
    could join it (``p_front`` >= the space's ``confirm.p_min``) with more seeds, up to ``seeds``
    in all (default: the space's ``confirm.seeds``, 3), and time them against each other in one
    paired pass of ``rounds`` interleaved rounds per timed profile. Resumable: a rerun goes on
    where a stopped one ended; once a pass is done a rerun confirms only new candidates, and
    ``new_pass`` runs an independent one. Returns :func:`nas.load_trials` of the study, whose
    columns now hold the confirmed values (``confirmed``, ``<m>_first``); ``df.attrs["confirmation"]``
    says what this run did (pass, candidates, trainings, paired timings, seconds, and ``line``, the
    summary `nas confirm` ends with). A stop signal
    raises :class:`SearchStopped` once the result in progress is stored."""
    from nas.store.study import load_study

    _check_arguments(confirm_seeds=seeds, confirm_rounds=rounds)
    with interrupts.handling():
        st, config = load_study(resolve_storage(study, storage), study, writable=True)
        check_runs_here(config.checked_space(trust_code=trust_code))
        return _confirm(st, config, dict(seeds=seeds, rounds=rounds, new_pass=new_pass, trust_code=trust_code), progress)


def delete_study(study: str, *, storage: Optional[str] = None) -> None:
    """Delete ``study`` and its trials (`nas delete --yes`); UserError if it is absent or a search
    still runs one of its trials."""
    from nas.store.study import delete_study as delete

    delete(resolve_storage(study, storage), study)


# ------------------------------------------------------------------------------ the steps
def _check_arguments(*, backend: Optional[str] = None, sampler: Optional[str] = None,
                     options: Optional[Mapping] = None, seed: Optional[int] = None,
                     flags: Optional[Mapping] = None, progress: Optional[ProgressFactory] = None, **settings) -> None:
    """UserError for a sampler, backend, option, latency lock, seed or setting of the wrong type or
    out of range (the CLI's option names, as `nas search` refuses them); ``flags`` are
    true-or-false arguments by name (``baselines``)."""
    from kernels.registry import UnknownName
    from nas.engine.backends import get_backend
    from search_spaces.schema import Check

    if sampler is not None and (not isinstance(sampler, str) or sampler not in SAMPLERS):
        raise UserError(f"--sampler: {sampler!r} is not one of {list(SAMPLERS)}")
    try:
        if backend is not None:
            get_backend(backend)
    except UnknownName as e:
        raise UserError(f"--backend: {e}") from None
    _check_options(options)
    if seed is not None and Check(int).error(seed):  # its range depends on the budget: check_seed
        raise UserError(f"--seed: {seed!r} is not allowed (an integer)")
    for name, value in (flags or {}).items():
        if not isinstance(value, bool):
            raise UserError(f"{name}: {value!r} is not allowed (True or False)")
    if progress is not None and not callable(progress):
        raise UserError(f"progress: {progress!r} is not allowed (a function of the budget, or None)")
    for name, value in settings.items():
        problem = None if value is None else _check_for(name).error(value)
        if problem:
            raise UserError(f"{name.removeprefix('confirm_')}: {problem}")


def _check_for(name: str):
    """The declared check of API argument ``name``: a SearchConfig setting, or (``confirm_<key>``)
    a setting of the ``confirm:`` section."""
    from search_spaces.schema import check_of

    if name.startswith("confirm_"):
        from evaluators.confirmation import ConfirmConfig

        return check_of(ConfirmConfig, name[len("confirm_"):])
    return check_of(SearchConfig, _SETTINGS[name])


def _check_options(options: Optional[Mapping]) -> None:
    """``options`` is a dict whose keys a backend or the sampler reads (a typo would be stored
    and never read), with a known latency lock."""
    from nas.engine.backends.ray import DEFAULTS
    from nas.engine.device_lock import MODES

    if options is None:
        return
    if not isinstance(options, Mapping):
        raise UserError(f"options: {options!r} is not allowed (a dict of backend and sampler options)")
    allowed = sorted({*DEFAULTS, *SAMPLER_OPTIONS})
    unknown = sorted(map(str, set(options) - set(allowed)))
    if unknown:
        raise UserError(f"options: unknown key {unknown[0]!r}; allowed: {allowed}")
    lock = options.get("latency_lock")
    if lock is not None and lock not in MODES:
        raise UserError(f"--latency-lock: {lock!r} is not one of {list(MODES)}")


def _load_space(space: SpaceArg):
    """The space a search is given, read and checked once (an ``evaluators.spaces.CheckedSpace``)."""
    if isinstance(space, Mapping):
        return _dict_space(space)
    if isinstance(space, (str, os.PathLike)):
        return load_checked(os.fspath(space))
    raise UserError(f"space: {space!r} is not allowed (a built-in space name, a path to a space file, or a dict)")


def _dict_space(raw: Mapping):
    """A space given as a dict: its plugins loaded (paths from the current directory), then
    checked as the same keys in a file would be; its YAML text is what the study stores."""
    import yaml

    from search_spaces.plugins import PluginError, load_space_plugins

    plain = _plain(raw, "")
    try:
        plugins = load_space_plugins(plain, Path.cwd())
    except PluginError as e:
        raise UserError(f"{DICT_SOURCE}: {e}") from None
    checked = load_checked(DICT_SOURCE, text=yaml.safe_dump(plain, sort_keys=False))
    return replace(checked, space=replace(checked.space, plugins=tuple(plugins)))


def _plain(value, path: str):
    """``value`` as YAML data (dicts with str keys, lists, str, int, float, bool, None)."""
    if isinstance(value, Mapping):
        for k in value:
            if not isinstance(k, str):
                raise UserError(f"{DICT_SOURCE}: {path or 'keys'}: key {k!r} is not allowed (a string)")
        return {k: _plain(v, f"{path}.{k}" if path else k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise UserError(f"{DICT_SOURCE}: {path}: {value!r} is not allowed (a str, number, bool, None, list or dict)")


def _open(plan: SearchPlan, given: dict, *, trials: Optional[int], timeout: Optional[float]):
    """(study, config, created): a new study, or the existing one with its stored config (its
    budget set to ``trials`` when given); a warning names the arguments it ignores."""
    from nas.engine.study_plugins import check_same_plugins
    from nas.store.study import create_or_load_study, save_budget

    st, stored, created = create_or_load_study(plan.config)
    if created:
        return st, plan.config, True
    check_same_plugins(stored, plan.config)
    if stored.space_yaml == plan.config.space_yaml:  # the same text: no need to read it again
        stored.use_space(plan.checked)
    ignored = [f"--{k} {v}" for k, v in given.items() if v is not None and v != getattr(stored, k)]
    if ignored:
        log.warning(f"note: study {stored.study!r} exists and keeps its stored settings (sampler {stored.sampler}, "
                    f"seed {stored.seed}, backend {stored.backend}, workers {stored.workers}); ignored: "
                    f"{', '.join(ignored)}")
    save_budget(st, stored, trials)
    stored.timeout = timeout
    return st, stored, False


def _log_progress(total: int):
    from nas.engine.progress import LogProgress

    return LogProgress(total, log)


def _run(study, config: SearchConfig, created: bool, progress: Optional[ProgressFactory]) -> "pd.DataFrame":
    """Run the study's backend until its budget; its trials (:func:`nas.load_trials`). A stop
    signal becomes :class:`SearchStopped`; a database problem on the way a UserError naming it."""
    from kernels.registry import UnknownName
    from nas.engine.backends import get_backend
    from nas.engine.logs import quiet_interrupt_fallout
    from nas.results.trials import trials_frame
    from nas.store.study import budget_count

    try:
        run_backend = get_backend(config.backend)
    except UnknownName as e:
        raise UserError(f"study {config.study!r}: {e}") from None
    quiet_interrupt_fallout()
    log.debug(f"study {config.study}: backend {config.backend} ({config.workers} worker(s)), sampler {config.sampler} "
              f"seed {config.seed}, heartbeat {config.heartbeat_interval}s, timeout {config.timeout}, plugins "
              f"{[p['name'] for p in config.plugins] or 'none'}, options {config.extra or 'none'}")
    try:
        log.info(f"{'created' if created else 'continuing'} study {config.study} in {config.storage}: space "
                 f"{config.space}, sampler {config.sampler}, {budget_count(study)}/{config.trials} trials finished")
        with (progress or _log_progress)(config.trials) as p:
            run_backend(study, config, progress=p, log=log.info)
        df = trials_frame(study)  # read through the storage the search opened (one per search)
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, SIGHUP: the backend recorded and re-queued its trials
        raise SearchStopped.after(e, study=config.study, storage=config.storage, finished=budget_count(study),
                                  budget=config.trials) from None
    except Exception as e:
        raise _database_error(e, config.storage) from None
    df.attrs["storage"] = config.storage
    if budget_count(study) >= config.trials and config.checked_space().confirm.auto:
        log.info(f"study {config.study}: confirming the front (the space's confirm: auto)")
        df = _confirm(study, config, {}, progress)
        log.info(df.attrs["confirmation"]["line"])
    return df


def _confirm(study, config: SearchConfig, options: dict, progress: Optional[ProgressFactory]) -> "pd.DataFrame":
    """Run :func:`nas.engine.confirm.confirm_study` on an open study; its trials after, with
    ``attrs["confirmation"]``. A stop becomes :class:`SearchStopped` (its message says how to go on),
    a database problem a UserError naming it."""
    from dataclasses import asdict

    from nas.engine.confirm import ConfirmStopped, confirm_study
    from nas.results.trials import trials_frame

    try:
        report = confirm_study(study, config, progress=progress or _log_progress, log=log.info, **options)
        df = trials_frame(study)  # through the storage already open
    except ConfirmStopped as e:
        raise SearchStopped(e.signum, str(e)) from None
    except Exception as e:
        raise _database_error(e, config.storage) from None
    df.attrs["storage"] = config.storage
    df.attrs["confirmation"] = {**asdict(report), "line": report.line()}
    return df


def _database_error(e: Exception, url: str) -> UserError:
    """The one-line UserError for a database problem ``e`` at ``url`` (damaged, locked, read-only,
    gone); any other exception is raised again as it is."""
    from nas.store.problems import storage_problem

    problem = storage_problem(e, url)
    if problem is None:
        raise e
    return UserError(problem)
