import optuna
import pytest
import torch

import evaluators
import search_spaces
from evaluators.evaluation import EvalSettings
from nas.engine.baselines import BASELINES, baseline_archs, enqueue_baselines
from nas.engine.objective import Objective
from nas.results.trials import load_trials
from search_spaces import get_mixer_info
from search_spaces.builder import check_compatible

SPACES = search_spaces.list_spaces()


def _middle(choices):
    return sorted(choices)[len(choices) // 2]


@pytest.mark.parametrize("name", SPACES)
def test_every_design_fits_the_task_and_the_middle_of_the_space(name):
    space = evaluators.load_space(name)
    archs, skipped = baseline_archs(space)
    assert set(archs) | set(skipped) == set(BASELINES)
    for label, arch in archs.items():
        arch.validate()
        check_compatible(arch, space.io)
        assert arch.causal == space.io.causal
        for stage, choices in zip(arch.stages, space.stages):
            assert stage.dim == _middle(choices.dim)
        assert arch.depth >= sum(_middle(s.depth) for s in space.stages)
        model = search_spaces.build_model(arch, space.io)
        x = torch.zeros(space.io.input_shape(2), dtype=torch.long if space.io.kind == "tokens" else torch.float)
        model.eval()
        with torch.no_grad():
            assert model(x).shape[0] == 2, label


@pytest.mark.parametrize("name", SPACES)
def test_design_patterns(name):
    space = evaluators.load_space(name)
    archs, skipped = baseline_archs(space)
    fam = {label: [get_mixer_info(t).family for t in a.mixer_types()] for label, a in archs.items()}
    assert set(archs["transformer"].mixer_types()) == {"softmax"}
    assert set(fam["hyena"]) == {"hyena"}
    assert fam["striped_hyena"][:2] == ["hyena", "attention"] and len(fam["striped_hyena"]) >= 2
    shvit = archs["shvit"].mixer_types()
    assert shvit[-1] == "single_head"
    assert (shvit[0] == "conv") == (space.io.kind in ("signal", "image"))
    if space.io.causal:
        assert "spectformer" not in archs and "causal" in skipped["spectformer"]
    else:
        spec = fam["spectformer"]
        assert spec[0] == "spectral" and spec[-1] == "attention"
        assert spec == sorted(spec, key=lambda f: f != "spectral")  # spectral first, then attention


def test_enqueue_once_and_evaluated_as_given(tmp_path):
    """Baselines are queued once, evaluated as the given arch, and marked in load_trials."""
    text = (search_spaces.space.resolve_space("tiny").read_text()
            .replace("n_train: 1000, n_test: 200", "n_train: 64, n_test: 32")
            .replace("steps: 100", "steps: 2")
            .replace("warmup: 2, repeats: 10, max_seconds: 1.0", "warmup: 1, repeats: 2, max_seconds: 0.2"))
    (tmp_path / "t.yaml").write_text(text)
    space = evaluators.load_space(str(tmp_path / "t.yaml"))
    storage = f"sqlite:///{tmp_path / 'b.db'}"
    study = optuna.create_study(study_name="b", storage=storage, directions=list(space.objectives.values()))
    study.set_metric_names(list(space.objectives))
    logged = []
    queued = enqueue_baselines(study, space, log=logged.append)
    assert queued == ["transformer", "shvit", "hyena", "striped_hyena"]
    assert logged == [m for m in logged if m.startswith("baseline spectformer skipped")] and len(logged) == 1
    assert enqueue_baselines(study, space) == []  # already queued: not again
    study.optimize(Objective(space, EvalSettings.from_space(space)), n_trials=2)  # two are enough (CPU time)
    df = load_trials(storage, "b")
    assert list(df["state"]) == ["COMPLETE", "COMPLETE", "WAITING", "WAITING"]
    archs, _ = baseline_archs(space)
    done = df[df["state"] == "COMPLETE"]
    assert list(done["baseline"]) == ["transformer", "shvit"]
    for _, r in done.iterrows():
        assert r["arch_id"] == archs[r["baseline"]].arch_id
    assert enqueue_baselines(study, space) == []  # finished ones count too
