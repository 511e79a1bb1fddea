"""A study stores its .py plugins' text, and opening someone else's study must not run it unasked:
`nas resume`, `nas train --study` and the model summary of `nas show` need --trust-code
(trust_code=True) for stored code that is not on this machine; one line naming it, exit 2, the code
not run and nothing written. `nas show` prints the study's objectives, constraints and every stored
metric with no plugin at all. The user's own files and installed modules need no opt-in."""

import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import nas
from evaluators.metrics import METRIC_REGISTRY
from nas.engine.config import SearchConfig
from nas.models.train_spec import spec_from_trial
from nas.store.study import budget_count, load_study
from nas.store.trial_attrs import ARCH_ID_KEY, ARCH_KEY, CONFIG_ATTR, ENV_ATTR, METRICS_KEY, SUMMARY_KEY
from search_spaces import ArchSpec
from search_spaces.plugins import Plugin, load_plugins, untrusted_plugins
from tests.cli_helpers import assert_one_line_error, invoke

SPACE = """
task: {name: mqar, params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2, n_train: 64, n_test: 16}}
objectives: {accuracy: maximize, tmark: minimize}
constraints: {params: {max: 100000}}
deploy: {long: {seq_len: 32}}
trials: 1
train: {steps: 3, batch_size: 16}
latency: {repeats: 2, warmup: 1, max_seconds: 0.1}
arch: {stages: [{depth: 1, dim: 16, mixer: {choices: {softmax: {}}}}]}
"""
ARCH = {"stem": {"type": "embed"}, "causal": True, "stages": [{"dim": 16, "blocks": [{"mixer": {"type": "softmax"}}]}]}
METRICS = {"accuracy": 0.5, "tmark": 1.0, "params": 5000.0, "latency_ms": 1.25, "latency_ms@long": 3.5,
           "bits_per_byte": 2.25}


@pytest.fixture(autouse=True)
def fresh():
    """Each test loads its plugins afresh and no other test sees them; calling the fixture's value
    forgets them mid-test, as a new process would not have them."""
    modules, metrics = set(sys.modules), set(METRIC_REGISTRY)

    def forget():
        for m in set(sys.modules) - modules:
            if m.startswith(("mixer_nas_plugin_", "tplug_")):
                del sys.modules[m]
        for name in set(METRIC_REGISTRY) - metrics:
            METRIC_REGISTRY.unregister(name)

    yield forget
    forget()


def _code(marker: Path) -> str:
    """A plugin that registers the metric ``tmark`` and appends a line to ``marker`` (proof it ran)."""
    return textwrap.dedent(f"""
        from evaluators.metrics import register_metric

        with open({str(marker)!r}, "a") as f:
            f.write("ran\\n")
        register_metric("tmark", "minimize", lambda model, task, settings: 1.0, at="init")
    """)


def _foreign(tmp_path: Path, marker: Path) -> dict:
    """A .py plugin as another machine stored it: its file is not here."""
    return {"name": "tplug.py", "path": str(tmp_path / "elsewhere" / "tplug.py"), "code": _code(marker)}


def _study(tmp_path: Path, plugins: list) -> str:
    """A study as `nas search` leaves it (built with optuna.create_trial, nothing trained) whose
    config stores ``plugins``: one COMPLETE trial with costs at a deployment profile and a plugin metric."""
    url = f"sqlite:///{tmp_path}/s.db"
    config = SearchConfig(space="space.yaml", space_yaml=SPACE, study="s", storage=url, trials=1, plugins=plugins)
    st = optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"])
    st.set_metric_names(["accuracy", "tmark"])
    st.set_user_attr(CONFIG_ATTR, config.to_json())
    st.set_user_attr(ENV_ATTR, {"device": "cpu"})
    arch = ArchSpec.from_dict(ARCH)
    attrs = {ARCH_ID_KEY: arch.arch_id, ARCH_KEY: arch.to_json(), SUMMARY_KEY: arch.summary(), METRICS_KEY: METRICS}
    st.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[METRICS["accuracy"], METRICS["tmark"]],
                                           user_attrs=attrs))
    return url


def _show(url, *args, cwd):
    return invoke("show", "--study", "s", "--storage", url, "--trial", 0, *args, cwd=cwd)


def test_show_without_the_model_needs_no_plugin_and_prints_every_stored_metric(tmp_path):
    marker = tmp_path / "ran.txt"
    url = _study(tmp_path, [_foreign(tmp_path, marker)])
    r = _show(url, "--no-model", cwd=tmp_path)
    assert r.returncode == 0 and not r.stderr, r.stderr
    assert "objectives: accuracy (maximize), tmark (minimize)" in r.stdout
    assert "constraints: params <= 100000 (met)" in r.stdout
    assert ("metrics: accuracy=0.5, tmark=1, params=5000, latency_ms=1.25, latency_ms@long=3.5, bits_per_byte=2.25"
            in r.stdout)
    assert not marker.exists()


def test_show_leaves_out_the_untrusted_model_summary_with_a_note_and_builds_it_with_trust_code(tmp_path):
    marker = tmp_path / "ran.txt"
    url = _study(tmp_path, [_foreign(tmp_path, marker)])
    r = _show(url, cwd=tmp_path)  # the summary is only the default: everything else, a note, exit 0
    assert r.returncode == 0, r.stderr
    assert "latency_ms@long=3.5" in r.stdout and '"stages"' in r.stdout and "model summary" not in r.stdout
    note = r.stderr.strip().splitlines()
    assert len(note) == 1 and note[0].startswith("note: no model summary: study 's' carries plugin code that is not "
                                                 "on this machine: tplug.py (6 lines); nothing was run"), r.stderr
    assert "--trust-code" in note[0]
    r = _show(url, "--model", cwd=tmp_path)  # asked for: the same, as an error
    assert_one_line_error(r, "tplug.py (6 lines)", "--trust-code")
    assert "latency_ms@long=3.5" in r.stdout and not marker.exists()
    r = _show(url, "--trust-code", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "model summary" in r.stdout and "total" in r.stdout and marker.read_text() == "ran\n"


def test_show_of_a_study_whose_module_plugin_is_gone_prints_everything_but_the_summary(tmp_path):
    url = _study(tmp_path, [{"name": "tplug_gone", "module": "tplug_gone"}])
    r = _show(url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "tmark=1" in r.stdout and "no module named 'tplug_gone'" in r.stderr and "model summary" not in r.stdout
    assert _show(url, "--no-model", cwd=tmp_path).returncode == 0
    assert_one_line_error(_show(url, "--model", cwd=tmp_path), "no module named 'tplug_gone'")


def test_installed_module_plugins_need_no_trust(tmp_path, monkeypatch):
    marker = tmp_path / "ran.txt"
    (tmp_path / "tplug_installed.py").write_text(_code(marker))
    monkeypatch.syspath_prepend(str(tmp_path))
    url = _study(tmp_path, [{"name": "tplug_installed", "module": "tplug_installed"}])
    r = _show(url, cwd=tmp_path)
    assert r.returncode == 0 and not r.stderr, r.stderr
    assert "model summary" in r.stdout and marker.read_text() == "ran\n"


def test_train_from_a_study_with_stored_code_needs_trust_code(tmp_path):
    marker = tmp_path / "ran.txt"
    url = _study(tmp_path, [_foreign(tmp_path, marker)])
    r = invoke("train", "--study", "s", "--storage", url, "--trial", 0, "--steps", 2, "--out", "run", cwd=tmp_path)
    assert_one_line_error(r, "study 's' carries plugin code", "tplug.py (6 lines)", "--trust-code")
    assert not (tmp_path / "run").exists() and not marker.exists()
    spec = spec_from_trial(url, "s", 0, steps=2, trust_code=True)
    assert marker.exists() and [p["name"] for p in spec.plugins] == ["tplug.py"]


def test_resume_of_a_study_with_stored_code_needs_trust_code(tmp_path, fresh):
    marker = tmp_path / "ran.txt"
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tplug.py").write_text(_code(marker))
    url = f"sqlite:///{tmp_path}/r.db"
    invoke("search", "--space", "space.yaml", "--study", "r", "--storage", url, "--plugin", "src/tplug.py",
           cwd=tmp_path, check=True)  # the user's own file: no opt-in
    (tmp_path / "src" / "tplug.py").unlink()  # now the study is all there is: someone else's code
    marker.unlink()
    fresh()  # as a new process

    r = invoke("resume", "--study", "r", "--storage", url, "--trials", 2, cwd=tmp_path)
    assert_one_line_error(r, "study 'r' carries plugin code", "tplug.py (6 lines)", "nothing was run", "--trust-code")
    with pytest.raises(nas.UserError, match=r"trust_code=True"):
        nas.resume("r", storage=url, trials=2)
    st, config = load_study(url, "r")
    assert not marker.exists() and len(st.trials) == 1 and config.trials == 1  # nothing run or written

    r = invoke("resume", "--study", "r", "--storage", url, "--trials", 2, "--trust-code", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert budget_count(load_study(url, "r")[0]) == 2 and marker.read_text() == "ran\n"


def test_untrusted_plugins_are_stored_code_the_user_does_not_have(tmp_path, monkeypatch):
    own = tmp_path / "own.py"
    own.write_text("X = 1\n")
    same = Plugin("own.py", path=str(own), code="X = 1\n")
    edited = Plugin("own.py", path=str(own), code="X = 2\n")
    absent = Plugin("gone.py", path=str(tmp_path / "gone.py"), code="X = 3\n")
    module = Plugin("tplug_anything", module="tplug_anything")  # installed or not: it has no stored code
    assert untrusted_plugins([same, edited, absent.to_dict(), module]) == [edited, absent]
    load_plugins([absent], installed=False)  # imported already (trusted earlier): nothing more would run
    assert untrusted_plugins([edited, absent]) == [edited]
