"""Commands that only read start fast: they import neither torch nor timm (benchmarks/startup.py
times them), and a search builds its models without timm.

Each command runs in a fresh interpreter under ``python -X importtime``, whose report names every
module imported, at any depth.
"""

import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from nas.engine.config import SearchConfig
from nas.store.trial_attrs import ARCH_ID_KEY, ARCH_KEY, CONFIG_ATTR, ENV_ATTR, METRICS_KEY, SUMMARY_KEY
from search_spaces import ArchSpec, BlockSpec, MixerSpec, StageSpec, StemSpec
from search_spaces.space import resolve_space

NAS = "import sys; sys.argv[0] = 'nas'; from nas.cli import main; main()"
HEAVY = ("torch", "timm")


def _imported(args: list[str], cwd, code: str = NAS) -> set[str]:
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *args], cwd=cwd, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    names = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    return {n.split(".")[0] for n in names}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished 3-trial study of the tiny space, as a search leaves it (config, environment, arch, metrics)."""
    folder = tmp_path_factory.mktemp("startup")
    url = f"sqlite:///{folder}/s.db"
    config = SearchConfig(space="tiny", space_yaml=resolve_space("tiny").read_text(), study="s", storage=url, trials=3)
    st = optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"])
    st.set_metric_names(["accuracy", "latency_ms"])
    st.set_user_attr(CONFIG_ATTR, config.to_json())
    st.set_user_attr(ENV_ATTR, {"device": "cpu"})
    for i, (mixer, params) in enumerate((("softmax", {"heads": 2}), ("hyena", {"filter_dim": 8}), ("softmax", {}))):
        arch = ArchSpec(StemSpec("embed"), (StageSpec(32, (BlockSpec(MixerSpec(mixer, params)),)),), causal=True)
        metrics = {"accuracy": 0.5 + 0.1 * i, "latency_ms": 1.0 + i, "params": 1000.0 * (i + 1)}
        attrs = {ARCH_ID_KEY: arch.arch_id, ARCH_KEY: arch.to_json(), SUMMARY_KEY: arch.summary(), METRICS_KEY: metrics}
        st.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[metrics["accuracy"],
                                                                                  metrics["latency_ms"]],
                                               user_attrs=attrs))
    return folder, url


READ_ONLY = {
    "help": ["--help"],
    "spaces": ["spaces"],
    "studies": ["studies", "--storage", "{url}"],
    "status": ["status", "--study", "s", "--storage", "{url}"],
    "pareto": ["pareto", "--study", "s", "--storage", "{url}"],
    "export": ["export", "--study", "s", "--storage", "{url}", "--out", "{folder}/s.csv"],
    "show": ["show", "--study", "s", "--storage", "{url}", "--trial", "1", "--no-model"],
}


@pytest.mark.parametrize("command", list(READ_ONLY))
def test_read_only_commands_import_neither_torch_nor_timm(command, study):
    folder, url = study
    args = [a.format(url=url, folder=folder) for a in READ_ONLY[command]]
    imported = _imported(args, cwd=folder)
    assert "nas" in imported and "typer" in imported  # the report is read: the command's own imports are there
    assert not imported & set(HEAVY), f"nas {' '.join(args)} imports {sorted(imported & set(HEAVY))}"


def test_show_with_its_model_summary_builds_the_model(study):
    folder, url = study
    assert "torch" in _imported(["show", "--study", "s", "--storage", url, "--trial", "1"], cwd=folder)


def test_models_are_built_and_evaluated_without_timm(tmp_path):
    code = ("import evaluators, evaluators.evaluation, search_spaces; space = evaluators.load_space('tiny'); "
            "arch = search_spaces.ArchSpec.from_json(sys.argv[1]); search_spaces.build_model(arch, space.io)")
    arch = ArchSpec(StemSpec("embed"), (StageSpec(32, (BlockSpec(MixerSpec("softmax")),) * 2),), causal=True)
    imported = _imported([arch.to_json()], cwd=tmp_path, code="import sys; " + code)
    assert "torch" in imported and "timm" not in imported
