"""What `nas train` trains: an architecture, the task it was searched on, and the training settings.

A :class:`TrainSpec` comes from a finished trial of a study (:func:`spec_from_trial`), or from an
arch JSON file and a space (:func:`spec_from_arch`). Everything the user can get wrong is found
here, before any file is written: a trial that does not exist or did not finish, a space whose
task is not the one the trial was searched on, an architecture the space's task cannot run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

from nas.errors import UserError
from nas.store.trial_attrs import ARCH_KEY, error_of

__all__ = ["IDENTITY_KEYS", "TrainSpec", "front_trials", "spec_from_arch", "spec_from_trial"]

# what makes two runs the same run: a folder that holds a run resumes only a run equal in these
IDENTITY_KEYS = ("arch_id", "task", "train", "seed")


@dataclass(frozen=True)
class TrainSpec:
    """One full training. ``settings`` (an ``evaluators.evaluation.EvalSettings``) holds the task,
    its parameters and data seed, the training settings (``train.steps``: the full budget) and
    the latency settings of the space; ``seed`` seeds the initial weights and the batch order."""

    arch: object  # search_spaces.ArchSpec
    io: object  # search_spaces.TaskIO
    settings: object  # evaluators.evaluation.EvalSettings
    seed: int
    space: str  # the space's name
    source: dict = field(default_factory=dict)  # {"study", "storage", "trial"} or {"arch": path}
    plugins: tuple = ()  # plugin records (dicts) the model needs, loaded again by nas.load_model

    @property
    def steps(self) -> int:
        return self.settings.train.steps

    def record(self) -> dict:
        """The run as stored in train.json (JSON types only)."""
        from nas.models.folder import io_dict

        s = self.settings
        rec = {"arch_id": self.arch.arch_id, "summary": self.arch.summary(),
               "task": {"name": s.task, "params": dict(s.task_params), "seed": s.seed},
               "io": io_dict(self.io), "train": asdict(s.train), "seed": self.seed,
               "latency": asdict(s.latency), "space": self.space, "source": dict(self.source),
               "plugins": list(self.plugins)}
        return json.loads(json.dumps(rec))  # tuples become lists, as they read back

    def describe(self) -> str:
        src = self.source
        where = f"trial {src['trial']} of study {src['study']}" if "trial" in src else f"{src.get('arch')}"
        return f"{self.arch.summary()} (arch {self.arch.arch_id}, {where})"


def _settings(checked, data_seed: int, steps: int):
    """The evaluation settings of ``checked`` (an ``evaluators.spaces.CheckedSpace``) for a full
    training of ``steps`` steps on data seeded with ``data_seed``, without the ladder."""
    settings = checked.settings_for(data_seed)
    return replace(settings, train=replace(settings.train, steps=steps), ladder=())


def _task_text(task) -> str:
    return f"{task.name} {json.dumps(dict(task.params), sort_keys=True)}"


def _find_trial(study, number: int, name: str):
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    match = [t for t in trials if t.number == number]
    if not match:
        have = f"0..{len(trials) - 1}" if trials else "none"
        raise UserError(f"study {name!r} has no trial {number}; its trials are {have}")
    t = match[0]
    if t.state != TrialState.COMPLETE or not t.user_attrs.get(ARCH_KEY):
        why = error_of(t)
        raise UserError(f"trial {number} of study {name!r} is {t.state.name}{f' ({why})' if why else ''}, not "
                        f"COMPLETE; `nas train` trains finished trials (see `nas pareto --study {name}`)")
    return t


def spec_from_trial(storage: str, study: str, trial: int, *, steps: int, seed: Optional[int] = None,
                    space: Optional[str] = None, trust_code: bool = False) -> TrainSpec:
    """The architecture of finished trial ``trial``, trained on the study's task with the study's
    space settings, or those of ``space``, whose task must be the study's. ``trust_code``: run
    the study's stored plugin code that is not on this machine (else a UserError)."""
    from nas.engine.config import load_checked
    from nas.store.study import load_study
    from search_spaces import ArchSpec

    st, config = load_study(storage, study)
    t = _find_trial(st, trial, study)
    checked = config.checked_space(trust_code=trust_code)  # loads the study's plugins too
    searched = sp = checked.space
    if space is not None:
        checked = load_checked(space)
        sp = checked.space
        if (sp.task.name, dict(sp.task.params)) != (searched.task.name, dict(searched.task.params)):
            raise UserError(f"--space {space}: its task {_task_text(sp.task)} is not the task trial {trial} of study "
                            f"{study!r} was searched on ({_task_text(searched.task)}); leave --space out to use "
                            f"the study's")
    return TrainSpec(arch=ArchSpec.from_json(t.user_attrs[ARCH_KEY]), io=sp.io,
                     settings=_settings(checked, config.seed, steps), seed=config.seed if seed is None else seed,
                     space=sp.name, source={"study": study, "storage": storage, "trial": trial},
                     plugins=tuple(config.plugins))


def front_trials(storage: str, study: str) -> list[int]:
    """Trial numbers of the study's Pareto front (feasible, complete), in order."""
    from nas.results.trials import load_trials, pareto_front

    front = pareto_front(load_trials(storage, study))
    if front.empty:
        raise UserError(f"study {study!r} has no complete trial on its Pareto front yet")
    return sorted(int(n) for n in front["number"])


def _arch_task(path: Path) -> Optional[dict]:
    """The task recorded beside an arch file (a `nas train` folder's train.json), if any."""
    from nas.models.folder import TRAIN_FILE, read_json

    beside = path.parent / TRAIN_FILE
    return read_json(beside).get("task") if beside.is_file() else None


def spec_from_arch(arch_path: str, space: str, *, steps: int, seed: Optional[int] = None,
                   plugins: tuple = ()) -> TrainSpec:
    """The architecture in ``arch_path`` (an arch JSON file, e.g. a `nas train` folder's arch.json
    or what `nas show` prints; or such a folder) trained on the task of ``space``. ``plugins``:
    those loaded from ``--plugin`` (``search_spaces.plugins.Plugin``); the space's are added."""
    from nas.engine.config import load_checked
    from nas.engine.study_plugins import study_plugins
    from nas.models.folder import ARCH_FILE, read_json
    from search_spaces import ArchSpec, ArchValidationError
    from search_spaces.builder import check_compatible

    path = Path(arch_path)
    path = path / ARCH_FILE if path.is_dir() else path
    checked = load_checked(space)
    sp = checked.space
    try:
        arch = ArchSpec.from_dict(read_json(path)).validate()
        check_compatible(arch, sp.io)
    except ArchValidationError as e:
        raise UserError(f"--arch {arch_path}: {e} (space {sp.name}, task {sp.task.name})") from None
    was = _arch_task(path)
    if was is not None and (was.get("name"), was.get("params")) != (sp.task.name, dict(sp.task.params)):
        raise UserError(f"--arch {arch_path}: it was trained on task {was.get('name')} "
                        f"{json.dumps(was.get('params'), sort_keys=True)}, not on space {sp.name}'s task "
                        f"{_task_text(sp.task)}")
    data_seed = 0 if was is None else int(was.get("seed", 0))
    return TrainSpec(arch=arch, io=sp.io, settings=_settings(checked, data_seed, steps),
                     seed=data_seed if seed is None else seed, space=sp.name,
                     source={"arch": str(arch_path)}, plugins=tuple(study_plugins(plugins, sp)))
