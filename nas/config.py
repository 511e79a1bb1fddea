"""SearchConfig: everything a search needs, stored in the study so `nas resume` needs nothing else."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from evaluators.evaluate import EvalSettings
from nas.errors import UserError

__all__ = ["SearchConfig", "SAMPLERS", "default_storage", "load_space_checked"]

SAMPLERS = ("nsga2", "tpe", "random", "gp")


def default_storage(study: str) -> str:
    return f"sqlite:///results/{study}.db"


@dataclass
class SearchConfig:
    """A search: the space (its YAML text is kept, so the study does not depend on the file),
    the budget, the sampler and where trials are stored."""

    space: str  # name of a built-in space or the path it was loaded from
    space_yaml: str  # the space file's text at creation time
    study: str
    storage: str
    trials: int
    sampler: str = "nsga2"
    seed: int = 0
    backend: str = "local"
    workers: int = 1
    timeout: Optional[float] = None
    heartbeat_interval: int = 5
    grace_period: int = 20
    max_retry: int = 1
    extra: dict = field(default_factory=dict)
    # plugins the space needs (search_spaces.plugins.Plugin.to_dict(): a module name, or a .py
    # file's path and text), loaded by every process that builds models, Ray workers included
    plugins: list = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> "SearchConfig":
        return cls(**json.loads(s))

    def load_space(self):
        """The space parsed from the stored YAML text (validated and bound to its task), after
        loading the study's plugins; UserError naming a plugin that cannot be loaded."""
        from nas.plugins import load_study_plugins

        load_study_plugins(self.plugins, study=self.study)
        return load_space_checked(self.space, text=self.space_yaml)

    def eval_settings(self):
        return EvalSettings.from_space(self.load_space(), seed=self.seed)


def load_space_checked(name_or_path: str, text: Optional[str] = None):
    """Load and fully validate a space (arch section, task, objectives, settings) or raise UserError."""
    import search_spaces
    from search_spaces.space import SpaceError, parse_space

    try:
        if text is None:
            space = search_spaces.load_space(name_or_path)
        else:
            raw = yaml.safe_load(text)
            from evaluators.tasks import task_io_for

            space = parse_space(raw, source=Path(name_or_path).name, default_name=Path(name_or_path).stem)
            try:
                io = task_io_for(space.task["name"], space.task.get("params", {}))
            except (KeyError, ValueError, TypeError) as e:
                raise SpaceError(space.source, "task", e.args[0] if e.args else str(e)) from None
            space.bind(io)
    except SpaceError as e:
        raise UserError(str(e)) from None
    from evaluators.metrics import METRIC_REGISTRY
    from search_spaces.registries import UnknownName

    for name in list(space.objectives) + list(space.constraints):
        where = "objectives" if name in space.objectives else "constraints"
        try:
            metric = METRIC_REGISTRY.get(name)  # built-in or registered by a plugin
        except UnknownName as e:
            raise UserError(f"{space.source}: {where}.{name}: {e}") from None
        if metric.causal and not space.io.causal:
            raise UserError(f"{space.source}: {where}.{name}: only causal tasks decode token by token; "
                            f"task {space.task['name']!r} is not causal")
    try:
        EvalSettings.from_space(space)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{space.source}: {e.args[0] if e.args else e}") from None
    return space
