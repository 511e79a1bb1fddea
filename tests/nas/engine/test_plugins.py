"""Plugins and user metrics: a mixer and metrics defined outside the package (examples/custom_mixer)
searched from the CLI, killed and resumed, and on the Ray backend; errors; entry points."""

import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from optuna.trial import TrialState

import nas
from evaluators.evaluation import EvalSettings
from evaluators.metrics import METRIC_REGISTRY, compute_user_metrics
from evaluators.tasks import TASKS, make_task
from evaluators.zero_cost import ZERO_COST
from nas.engine.backends import BACKENDS
from nas.engine.config import load_space_checked
from nas.store.study import budget_count, load_study
from search_spaces import ArchSpec, build_model, get_mixer
from search_spaces.ffn import FFNS
from search_spaces.mixer_registry import MIXERS
from search_spaces.plugins import ENTRY_POINT_GROUP, PluginError, installed_plugins, load_plugins, resolve_plugins
from tests.cli_helpers import NAS, invoke, run_nas

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "custom_mixer"
REGISTRIES = (MIXERS, FFNS, TASKS, METRIC_REGISTRY, ZERO_COST, BACKENDS)

# the example's space without its plugins: line (given by --plugin instead), one trial
SPACE_NO_PLUGINS = (EXAMPLE / "space.yaml").read_text().replace("plugins: [ema.py]", "").replace("trials: 6", "trials: 1")
# one built-in candidate, three training steps
SMALL = """
task: {name: mqar, params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2, n_train: 64, n_test: 16}}
objectives: {%(objective)s: minimize}
trials: 1
train: {steps: 3, batch_size: 16}
latency: {repeats: 2, warmup: 1, max_seconds: 0.1}
arch: {stages: [{depth: 1, dim: 16, mixer: {choices: {%(mixer)s: {}}}}]}
"""


class _Snapshot:
    """The registries and plugin modules as they are now; ``restore()`` forgets what plugins added
    since, as a fresh process would not have it."""

    def __init__(self):
        self.names = [set(r) for r in REGISTRIES]
        self.modules = set(sys.modules)

    def restore(self):
        for reg, names in zip(REGISTRIES, self.names):
            for name in set(reg) - names:
                reg.unregister(name)
        for m in set(sys.modules) - self.modules:
            if m.startswith(("mixer_nas_plugin_", "tplug_")):
                del sys.modules[m]
        installed_plugins.cache_clear()


@pytest.fixture(autouse=True)
def fresh():
    """Each test loads its plugins afresh and no other test sees them."""
    snapshot = _Snapshot()
    yield snapshot
    snapshot.restore()


def _copy_example(dst: Path) -> Path:
    shutil.copytree(EXAMPLE, dst, ignore=shutil.ignore_patterns("__pycache__", "results"))
    return dst / "space.yaml"


def _one_line_error(r, *fragments):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    assert "Traceback" not in r.stderr + r.stdout


# ------------------------------------------------------------------------------ the example itself
def _load_example():
    load_plugins(resolve_plugins(["ema.py"], EXAMPLE))


def test_example_mixer_is_an_ema_and_causal():
    """The example's mixer against a naive recurrence y_t = (1 - a) x_t + a y_{t-1}."""
    _load_example()
    torch.manual_seed(0)
    m = get_mixer("ema")(8, causal=True, gate=False)
    x = torch.randn(2, 12, 8)
    a = torch.sigmoid(m.decay_logit)
    h, ys = torch.zeros(2, 8), []
    for t in range(12):
        h = (1 - a) * x[:, t] + a * h
        ys.append(h)
    assert torch.allclose(m(x), m.proj(torch.stack(ys, 1)), atol=1e-5)
    x2 = x.clone()
    x2[:, 7:] += 1.0
    assert torch.allclose(m(x)[:, :7], m(x2)[:, :7], atol=1e-6)  # the future does not leak


def _mixer_params_analytic(arch: ArchSpec) -> int:
    """Mixer parameters counted from the architecture alone (EMA: decay, gate, projection)."""
    total = 0
    for stage in arch.stages:
        c = stage.dim
        for b in stage.blocks:
            if b.mixer.type == "ema":
                total += c + (c * c + c if b.mixer.params.get("gate", True) else 0) + c * c + c
            else:
                total += sum(p.numel() for p in get_mixer(b.mixer.type)(c, causal=True, **b.mixer.params).parameters())
    return total


def test_example_metrics_against_independent_computations():
    _load_example()
    space = load_space_checked(str(EXAMPLE / "space.yaml"))
    settings = EvalSettings.from_space(space)
    assert settings.metrics == ("test_loss", "mixer_params")  # objectives, then constraints
    task = make_task(settings.task, settings.task_params)
    arch = ArchSpec.from_dict({"stem": {"type": "embed"}, "causal": True, "stages": [
        {"dim": 16, "blocks": [{"mixer": {"type": "ema", "params": {"gate": True}}},
                               {"mixer": {"type": "softmax", "params": {"heads": 2}}}]}]})
    torch.manual_seed(0)
    model = build_model(arch, task.io)
    values = compute_user_metrics(settings.metrics, model, task, settings, at="init")
    assert values == {"mixer_params": float(_mixer_params_analytic(arch))}
    values = compute_user_metrics(settings.metrics, model, task, settings, at="trained")
    x, y = task.split("test")
    with torch.no_grad():
        logp = F.log_softmax(model.eval()(x), -1)
    picked = [-logp[i, t, y[i, t]] for i in range(len(y)) for t in range(y.shape[1]) if y[i, t] >= 0]
    assert values["test_loss"] == pytest.approx(float(torch.stack(picked).mean()), rel=1e-5)


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("option,space_plugins,fragments", [
    (["--plugin", "no_such_module_xyz"], None,
     ["--plugin: plugin 'no_such_module_xyz': no module named 'no_such_module_xyz'"]),
    (["--plugin", "not a name"], None, ["--plugin: 'not a name' is neither a module name"]),
    ([], "[missing.py]", ["space.yaml: plugins[0]: plugin 'missing.py': cannot read", "missing.py"]),
    ([], "[boom.py]", ["space.yaml: plugins[0]: plugin 'boom.py' failed to import: ZeroDivisionError: division by zero"]),
    ([], "ema.py", ["space.yaml: plugins: 'ema.py' must be a list of module names or .py paths"]),
])
def test_missing_or_failing_plugin_is_one_line_exit_2_nothing_written(tmp_path, option, space_plugins, fragments):
    (tmp_path / "boom.py").write_text("x = 1 / 0\n")
    text = SMALL % {"objective": "params", "mixer": "softmax"}
    text = text if space_plugins is None else f"plugins: {space_plugins}\n" + text
    (tmp_path / "space.yaml").write_text(text)
    r = invoke("search", "--space", "space.yaml", "--study", "p", *option, cwd=tmp_path)
    _one_line_error(r, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boom.py", "space.yaml"]  # no results/, no database


CHEAT = """
import sys

import torch
from torch import nn

from search_spaces import Mixer, register_mixer


@register_mixer("peek", causal=True, family="recurrent")
class Peek(Mixer):
    \"\"\"Claims to be causal, but reads token t + 1: the sequence shifted left, then a linear layer.\"\"\"

    def __init__(self, dim, *, causal=False):
        super().__init__(dim, causal=causal)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, hw=None):
        %s
"""


@pytest.mark.parametrize("forward,rule", [
    ("return self.proj(torch.roll(x, -1, 1))", "declared causal, but output position 0 depends on input position 1"),
    ("sys.exit(3)", "forward raises SystemExit: 3"),
], ids=["future", "exit"])
def test_a_plugin_mixer_breaking_its_contract_is_one_line_exit_2_nothing_written(tmp_path, forward, rule):
    (tmp_path / "cheat.py").write_text(CHEAT % forward)
    (tmp_path / "space.yaml").write_text(SMALL % {"objective": "params", "mixer": "peek"})
    r = invoke("search", "--space", "space.yaml", "--study", "c", "--plugin", "cheat.py", cwd=tmp_path)
    _one_line_error(r, "space.yaml: arch.stages[0].mixer.choices.peek: mixer 'peek' (plugin cheat.py) breaks its "
                       f"contract: {rule} (built with dim=16, causal=True)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cheat.py", "space.yaml"]  # no results/, no database


def test_plugin_option_is_stored_and_a_changed_plugin_is_refused(tmp_path, fresh, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))  # module plugins must be importable, like any module
    (tmp_path / "tplug_lib").mkdir()
    shutil.copy(EXAMPLE / "ema.py", tmp_path / "tplug_lib" / "ema.py")
    (tmp_path / "space.yaml").write_text(SPACE_NO_PLUGINS)
    url = f"sqlite:///{tmp_path}/o.db"
    r = invoke("search", "--space", "space.yaml", "--study", "o", "--storage", url, "--plugin", "tplug_lib/ema.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    st, config = load_study(url, "o")
    assert config.plugins == [{"name": "tplug_lib/ema.py", "path": str(tmp_path / "tplug_lib" / "ema.py"),
                               "code": (EXAMPLE / "ema.py").read_text()}]
    t = st.trials[0]
    assert t.state == TrialState.COMPLETE and set(t.user_attrs["metrics"]) >= {"test_loss", "mixer_params"}

    fresh.restore()  # each command below runs as in a new process
    r = invoke("search", "--space", "space.yaml", "--study", "o", "--storage", url, cwd=tmp_path)
    _one_line_error(r, "unknown mixer 'ema'")  # the space names a mixer of the plugin
    r = invoke("search", "--space", "space.yaml", "--study", "o", "--storage", url, "--plugin", "tplug_lib.ema", cwd=tmp_path)
    _one_line_error(r, "was made with plugins ['ema.py'], this run loads ['tplug_lib.ema']", "nas resume --study o")
    fresh.restore()
    (tmp_path / "tplug_lib" / "ema.py").write_text((EXAMPLE / "ema.py").read_text() + "\n# edited\n")
    r = invoke("search", "--space", "space.yaml", "--study", "o", "--storage", url, "--plugin", "tplug_lib/ema.py", cwd=tmp_path)
    _one_line_error(r, "earlier version of plugin ema.py (the file changed since)")
    assert len(load_study(url, "o")[0].trials) == 1  # nothing was run or written


def test_failing_user_metric_is_a_fail_trial_with_its_reason(tmp_path):
    (tmp_path / "flaky.py").write_text(textwrap.dedent("""
        from evaluators.metrics import register_metric

        @register_metric("flaky", "minimize")
        def flaky(model, task, settings):
            raise RuntimeError("no luck today")
    """))
    (tmp_path / "space.yaml").write_text("plugins: [flaky.py]\n" + SMALL % {"objective": "flaky", "mixer": "softmax"})
    url = f"sqlite:///{tmp_path}/f.db"
    r = invoke("search", "--space", "space.yaml", "--study", "f", "--storage", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    df = nas.load_trials(url, "f")
    assert list(df.state) == ["FAIL"]
    assert df.error[0] == "metric flaky failed: RuntimeError: no luck today"


def test_user_metric_returning_a_non_number_fails_the_trial():
    from evaluators.errors import TrialFailure
    from evaluators.metrics import register_metric

    register_metric("wordy", "minimize", lambda model, task, settings: "many")
    model = torch.nn.Linear(2, 2)
    with pytest.raises(TrialFailure, match="metric wordy returned 'many', not a number"):
        compute_user_metrics(("wordy", "accuracy"), model, None, type("S", (), {"seed": 0}), at="trained")


def test_init_metric_bounds_a_ladder_filter_and_a_trained_one_cannot(tmp_path):
    shutil.copy(EXAMPLE / "ema.py", tmp_path / "ema.py")
    ladder = "plugins: [ema.py]\nladder:\n  - {rung: filter, max: {%s: 1}}\n"
    (tmp_path / "space.yaml").write_text(ladder % "mixer_params" + SMALL % {"objective": "test_loss", "mixer": "ema"})
    url = f"sqlite:///{tmp_path}/l.db"
    r = invoke("search", "--space", "space.yaml", "--study", "l", "--storage", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    df = nas.load_trials(url, "l")
    assert list(df.state) == ["PRUNED"] and "mixer_params" in df.error[0] and "> max 1" in df.error[0]

    (tmp_path / "space.yaml").write_text(ladder % "test_loss" + SMALL % {"objective": "test_loss", "mixer": "ema"})
    r = invoke("search", "--space", "space.yaml", "--study", "l2", "--storage", f"sqlite:///{tmp_path}/l2.db", cwd=tmp_path)
    _one_line_error(r, "ladder[0].max.test_loss", "mixer_params")
    assert not (tmp_path / "l2.db").exists()


def test_task_from_a_plugin_is_searched_like_a_built_in(tmp_path):
    (tmp_path / "parity.py").write_text(textwrap.dedent("""
        import torch
        from evaluators.tasks import Task, register_task
        from search_spaces import TaskIO

        @register_task("parity")
        class Parity(Task):
            \"\"\"Is the number of ones in a bit string odd?\"\"\"

            @classmethod
            def io_for(cls, length: int = 8):
                return TaskIO(kind="tokens", num_classes=2, seq_len=length, vocab_size=2)

            def _generate(self):
                g = torch.Generator().manual_seed(self.seed)
                x = torch.randint(0, 2, (96, self.io.seq_len), generator=g)
                y = x.sum(1) % 2
                return {"train": (x[:64], y[:64]), "test": (x[64:], y[64:])}
    """))
    text = (SMALL % {"objective": "params", "mixer": "softmax"}).replace(
        "{name: mqar, params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2, n_train: 64, n_test: 16}}",
        "{name: parity, params: {length: 6}}")
    (tmp_path / "space.yaml").write_text("plugins: [parity.py]\n" + text)
    url = f"sqlite:///{tmp_path}/t.db"
    r = invoke("search", "--space", "space.yaml", "--study", "t", "--storage", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    df = nas.load_trials(url, "t")
    assert list(df.state) == ["COMPLETE"] and 0 <= df.accuracy[0] <= 1
    assert load_study(url, "t")[1].load_space().io.seq_len == 6


# ------------------------------------------------------------------------------ entry points
def _fake_entry_points(monkeypatch, *values):
    eps = [importlib.metadata.EntryPoint(name=f"ep{i}", value=v, group=ENTRY_POINT_GROUP) for i, v in enumerate(values)]
    real = importlib.metadata.entry_points

    def entry_points(**kw):
        return eps if kw.get("group") == ENTRY_POINT_GROUP else real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    installed_plugins.cache_clear()


def test_entry_point_plugins_load_with_every_space(tmp_path, monkeypatch):
    (tmp_path / "tplug_installed.py").write_text(textwrap.dedent("""
        from evaluators.metrics import register_metric

        register_metric("width_sum", "minimize", lambda model, task, settings: 1.0, at="init")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    _fake_entry_points(monkeypatch, "tplug_installed")
    assert [p.module for p in installed_plugins()] == ["tplug_installed"]
    (tmp_path / "space.yaml").write_text(SMALL % {"objective": "width_sum", "mixer": "softmax"})
    space = load_space_checked(str(tmp_path / "space.yaml"))  # the entry point's metric is known
    assert "width_sum" in space.objectives and "width_sum" in METRIC_REGISTRY
    assert space.plugins == ()  # installed plugins belong to the environment: not stored with a study


@pytest.mark.parametrize("value,fragment", [
    ("tplug_absent_module", "plugin 'ep0 (entry point of ?)': no module named 'tplug_absent_module'"),
    ("tplug_mod:register", "entry point 'ep0' of ? in group mixer_nas.plugins: 'tplug_mod:register' must name a module"),
])
def test_bad_entry_point_is_a_plugin_error_naming_it(monkeypatch, value, fragment):
    _fake_entry_points(monkeypatch, value)
    with pytest.raises(PluginError) as e:
        load_plugins()
    assert fragment in str(e.value)


# ------------------------------------------------------------------------------ end to end
def _wait_running(url, study, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            trials = optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
            if any(t.state == TrialState.RUNNING and "arch_id" in t.user_attrs for t in trials) and \
                    any(t.state == TrialState.COMPLETE for t in trials):
                return
        except KeyError:  # not created yet
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"no running trial appeared: {proc.communicate()}")


def _check_example_trials(df):
    done = df[df.state == "COMPLETE"]
    assert len(done) and done.test_loss.notna().all()
    for _, row in done.iterrows():  # the stored metric equals a count from the architecture alone
        assert row.mixer_params == _mixer_params_analytic(ArchSpec.from_json(row.arch_json))
        assert row["constraint.mixer_params<=4000"] == row.mixer_params - 4000
    assert done.arch_json.str.contains('"ema"').any()  # the random sampler, seed 0: trial 0 has an ema layer


@pytest.mark.slow
def test_example_from_the_cli_killed_and_resumed_then_shown_without_its_file(tmp_path):
    space = _copy_example(tmp_path / "ex")
    # trials of 10 steps end within a poll on a quiet machine: long enough ones for the kill to land in
    space.write_text(space.read_text().replace("steps: 10,", "steps: 300,"))
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    for attempt in range(3):  # the kill must land on a running trial, not between two trials
        url = f"sqlite:///{tmp_path}/ex{attempt}.db"
        proc = subprocess.Popen([*NAS, "search", "--space", str(space), "--study", "ex", "--storage", url, "--trials",
                                 "3", "--heartbeat", "1", "--sampler", "random"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_running(url, "ex", proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        states = [t.state for t in optuna.load_study(study_name="ex", storage=url).get_trials(deepcopy=False)]
        if TrialState.RUNNING in states:
            break
    else:
        raise AssertionError("three kills in a row landed between trials")
    r = run_nas("resume", "--study", "ex", "--storage", url, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    st, config = load_study(url, "ex")
    assert budget_count(st) == 3 and [p["name"] for p in config.plugins] == ["ema.py"]
    df = nas.load_trials(url, "ex")
    assert (df.state == "FAIL").sum() == 1 and "heartbeat" in df[df.state == "FAIL"].error.iloc[0]
    _check_example_trials(df)

    (tmp_path / "ex" / "ema.py").unlink()  # the study keeps the plugin's text: no file needed, but trust
    n = int(df[(df.state == "COMPLETE") & df.arch_json.str.contains('"ema"')].number.iloc[0])
    r = run_nas("show", "--study", "ex", "--storage", url, "--trial", n, "--trust-code", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ema" in r.stdout and "total" in r.stdout


@pytest.mark.slow
def test_example_on_the_ray_backend_with_two_workers(tmp_path):
    pytest.importorskip("ray")
    space = _copy_example(tmp_path / "ex")
    url = f"sqlite:///{tmp_path}/ray.db"
    r = run_nas("search", "--space", space, "--study", "ray", "--storage", url, "--trials", "4", "--backend", "ray",
                "--workers", "2", "--no-early-stop", "--sampler", "random", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    df = nas.load_trials(url, "ray")
    assert list(df.state) == ["COMPLETE"] * 4, df.error.tolist()
    _check_example_trials(df)
    st, _ = load_study(url, "ray")
    workers = {t.user_attrs["worker"]["pid"] for t in st.trials}
    assert len(workers) == 2, "two Ray workers, each loading the plugin from the study's config"
