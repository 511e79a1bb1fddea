"""Plugins cannot take over the process: SystemExit or KeyboardInterrupt while one is imported is one
line and exit 2, and the import is undone (nothing it registered stays); sys.exit inside a trial (a
mixer, an FFN, a user metric) fails that trial and the search goes on, on the Ray workers too; a
stop signal during an import still stops; and a stop signal that lands while a finished command's
process shuts down ends it without a traceback."""

import itertools
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nas
from evaluators.metrics import METRIC_REGISTRY
from evaluators.tasks import TASKS
from evaluators.zero_cost import ZERO_COST
from kernels.dispatch import OPS
from kernels.registry import snapshot
from nas.engine.backends import BACKENDS
from search_spaces.ffn import FFNS
from search_spaces.mixer_registry import MIXERS
from search_spaces.plugins import Plugin, PluginError, installed_plugins, load_plugins, resolve_plugins
from tests.cli_helpers import assert_one_line_error, default_stop_signals, invoke

REGISTRIES = (MIXERS, FFNS, TASKS, METRIC_REGISTRY, ZERO_COST, BACKENDS, OPS)
PREFIXES = ("mixer_nas_plugin_", "tplug_")  # the modules of this file's plugins

# one candidate (mixer %(mixer)s), two training steps; the objective is %(objective)s
SPACE = """
task: {name: mqar, params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2, n_train: 64, n_test: 16}}
objectives: {%(objective)s}
trials: 1
train: {steps: 2, batch_size: 16}
latency: {repeats: 2, warmup: 1, max_seconds: 0.1}
arch: {stages: [{depth: 1, dim: 16, mixer: {choices: {%(mixer)s: {}}}, ffn: {type: [%(ffn)s], ratio: 2}}]}
"""

# a causal mixer (a linear layer per token) named %(name)s; %(forward)s is the first line of its forward
MIXER = """
import signal
import sys

from torch import nn

from search_spaces import Mixer, register_mixer


@register_mixer(%(name)r, causal=True)
class Quits(Mixer):
    \"\"\"A linear layer per token.\"\"\"

    def __init__(self, dim, *, causal=False):
        super().__init__(dim, causal=causal)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, hw=None):
        %(forward)s
        return self.proj(x)
"""
# in training, not in the contract probe (its batch is 2): the whole search would end with exit 3
EXIT_IN_TRAINING = "if self.training and x.shape[0] > 2: sys.exit(3)"
# what a plugin registers besides its mixer, before it breaks
MORE = """
from evaluators.metrics import register_metric
from evaluators.zero_cost import register_zero_cost
from search_spaces.ffn import register_ffn

register_ffn(%(name)r + "_ffn")(lambda dim, ratio: None)
register_metric(%(name)r + "_metric", "minimize", lambda model, task, settings: 1.0, at="init")
register_zero_cost(%(name)r + "_proxy", lambda model, x, y, loss_fn: 1.0)
"""
BREAKS = {  # what a plugin does at the end of its import: (code, what the one-line error says)
    "exit_0": ("sys.exit(0)", "SystemExit: 0 (a plugin must not end the process)"),
    "exit_3": ("sys.exit(3)", "SystemExit: 3 (a plugin must not end the process)"),
    "exit_message": ("sys.exit('bye')", "SystemExit: bye (a plugin must not end the process)"),
    "interrupt": ("raise KeyboardInterrupt", "KeyboardInterrupt (a plugin must not end the process)"),
    "raise": ("raise RuntimeError('half done')", "RuntimeError: half done"),
}


def _plugin(name: str, *, forward: str = "pass", more: bool = True, end: str = "") -> str:
    return (MIXER % {"name": name, "forward": forward} + (MORE % {"name": name} if more else "")
            + (f"\n{end}\n" if end else ""))


def _space(dir, name="space.yaml", *, mixer="softmax", objective="accuracy: maximize", ffn="mlp"):
    (dir / name).write_text(SPACE % {"mixer": mixer, "objective": objective, "ffn": ffn})
    return name


def _forget_plugins(before) -> None:
    """Forget this test's plugins, as a fresh process would not have them."""
    for m in list(sys.modules):
        if m.startswith(PREFIXES) and m not in before:
            del sys.modules[m]
    installed_plugins.cache_clear()


@pytest.fixture(autouse=True)
def fresh():
    """Each test starts with every registry's built-ins loaded (so what it compares is only what its
    plugins did) and ends with its plugins forgotten."""
    for registry in REGISTRIES:
        registry.names()
    before, modules = snapshot(), set(sys.modules)
    yield before
    _forget_plugins(modules)
    before.restore()


@pytest.fixture
def stop_signals():
    """The stop signals with their default action here, as in a terminal (a suite run in the
    background has SIGINT ignored, and handling leaves an ignored signal ignored)."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def _no_plugin_modules():
    return [m for m in sys.modules if m.startswith(PREFIXES)]


# ------------------------------------------------------------------------------ at import
@pytest.mark.parametrize("break_", list(BREAKS))
@pytest.mark.parametrize("form", ["file", "module"])
def test_a_plugin_that_exits_or_raises_at_import_is_one_line_exit_2_and_leaves_nothing(tmp_path, fresh, monkeypatch,
                                                                                       form, break_):
    code, said = BREAKS[break_]
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "tplug_half.py").write_text(_plugin("half", end=code))
    name = "tplug_half.py" if form == "file" else "tplug_half"
    r = invoke("search", "--space", _space(tmp_path, mixer="half"), "--study", "p", "--plugin", name, cwd=tmp_path)
    assert_one_line_error(r, f"--plugin: plugin {name!r} failed to import: {said}")
    assert snapshot() == fresh and not _no_plugin_modules()  # nothing registered, no module left
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == ["space.yaml", "tplug_half.py"]


def test_stored_plugin_code_that_exits_is_a_plugin_error(fresh):
    plugin = Plugin("gone.py", path="/nowhere/gone.py", code=_plugin("gone", end="sys.exit(0)"))
    with pytest.raises(PluginError, match=r"^plugin 'gone.py' failed to import: SystemExit: 0 \(a plugin must not"):
        load_plugins([plugin.to_dict()], installed=False)
    assert snapshot() == fresh and not _no_plugin_modules()


def test_a_stop_signal_during_a_plugin_import_stops_and_undoes_it(tmp_path, fresh, stop_signals):
    """The signal's KeyboardInterrupt is a stop, not the plugin failing: exit 128 + 15, as anywhere else."""
    (tmp_path / "late.py").write_text(_plugin("late", end="signal.raise_signal(signal.SIGTERM)"))
    r = invoke("search", "--space", _space(tmp_path), "--study", "p", "--plugin", "late.py", cwd=tmp_path)
    assert r.returncode == 128 + signal.SIGTERM, (r.stdout, r.stderr)
    assert r.stderr.strip() == "terminated by SIGTERM"
    assert snapshot() == fresh and not _no_plugin_modules()


def test_a_failed_plugin_loads_once_fixed_in_the_same_process(tmp_path, fresh, monkeypatch):
    """A plugin that registered its mixer and then raised; its file fixed, the next search finds it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "half.py").write_text(_plugin("half", end="raise RuntimeError('half done')"))
    (tmp_path / "space.yaml").write_text("plugins: [half.py]\n" + SPACE % {
        "mixer": "half", "objective": "half_metric: minimize", "ffn": "half_ffn"})
    url = f"sqlite:///{tmp_path}/h.db"
    with pytest.raises(nas.UserError, match="plugin 'half.py' failed to import: RuntimeError: half done"):
        nas.search("space.yaml", study="h", storage=url)
    assert snapshot() == fresh and not _no_plugin_modules()
    (tmp_path / "half.py").write_text(_plugin("half"))
    df = nas.search("space.yaml", study="h", storage=url)
    assert list(df.state) == ["COMPLETE"] and {"half", "half_ffn", "half_metric", "half_proxy"} <= {
        n for r in REGISTRIES for n in r}


def test_what_a_module_the_failed_plugin_imported_registered_stays(tmp_path, fresh, monkeypatch):
    """A module the plugin imported stays imported, so its entries stay: it would not register them again."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "tplug_helper.py").write_text("from search_spaces.ffn import register_ffn\n\n"
                                              "register_ffn('helper_ffn')(lambda dim, ratio: None)\n")
    (tmp_path / "tplug_uses.py").write_text("import tplug_helper  # noqa: F401\n" + _plugin("uses", end="1 / 0"))
    with pytest.raises(PluginError, match="ZeroDivisionError"):
        load_plugins(resolve_plugins(["tplug_uses"], tmp_path), installed=False)
    assert "helper_ffn" in FFNS and "uses" not in MIXERS and "uses_ffn" not in FFNS
    assert "tplug_helper" in sys.modules and "tplug_uses" not in sys.modules
    (tmp_path / "tplug_uses.py").write_text("import tplug_helper  # noqa: F401\n" + _plugin("uses"))
    load_plugins(resolve_plugins(["tplug_uses"], tmp_path), installed=False)
    assert "uses" in MIXERS and "uses_ffn" in FFNS


# ------------------------------------------------------------------------------ inside a trial
EXITS = {  # where user code calls sys.exit(3) inside a trial: (plugin text, space keys)
    "mixer forward": (_plugin("quits", forward=EXIT_IN_TRAINING, more=False), {"mixer": "quits"}),
    "ffn": ("import sys\nfrom search_spaces.ffn import register_ffn\n\n"
            "@register_ffn('quits')\ndef quits(dim, ratio):\n    sys.exit(3)\n", {"ffn": "quits"}),
    "metric": ("import sys\nfrom evaluators.metrics import register_metric\n\n"
               "@register_metric('quits', 'minimize', at='init')\ndef quits(model, task, settings):\n    sys.exit(3)\n",
               {"objective": "quits: minimize"}),
}


@pytest.mark.parametrize("where", list(EXITS))
def test_sys_exit_inside_a_trial_fails_the_trial_and_the_search_goes_on(tmp_path, where):
    code, keys = EXITS[where]
    (tmp_path / "quits.py").write_text(code)
    url = f"sqlite:///{tmp_path}/q.db"
    r = invoke("search", "--space", _space(tmp_path, **keys), "--study", "q", "--storage", url, "--trials", 2,
               "--plugin", "quits.py", cwd=tmp_path)
    assert r.returncode == 0, (r.stdout, r.stderr)
    df = nas.load_trials(url, "q")
    assert list(df.state) == ["FAIL", "FAIL"]  # the second trial is the same architecture
    assert df.error[0] == "SystemExit: 3 raised inside the trial"


def test_sys_exit_inside_a_ray_workers_trial_is_the_trials_error(tmp_path, monkeypatch):
    """What a Ray worker reports (nas.engine.backends.ray_worker), run in this process."""
    ray = pytest.importorskip("ray")
    from ray import tune

    from nas.engine.backends import ray_worker
    from search_spaces import ArchSpec

    (tmp_path / "quits.py").write_text(EXITS["mixer forward"][0])
    space = tmp_path / _space(tmp_path, mixer="quits")
    reports = []
    monkeypatch.setattr(tune, "report", reports.append)

    def no_runtime():  # outside a Ray worker (asked here, Ray would start a local instance)
        raise RuntimeError("not in a Ray worker")

    monkeypatch.setattr(ray, "get_runtime_context", no_runtime)
    arch = ArchSpec.from_dict({"stem": {"type": "embed"}, "causal": True, "stages": [
        {"dim": 16, "blocks": [{"mixer": {"type": "quits", "params": {}}, "ffn": {"type": "mlp", "ratio": 2}}]}]})
    ray_worker.evaluate_trial({"space": str(space), "space_yaml": space.read_text(), "seed": 0, "threads": 1,
                               "report_every": 100, "lock_mode": "none", "latency_tables": None,
                               "plugins": [p.to_dict() for p in resolve_plugins(["quits.py"], tmp_path)],
                               "arch": arch.to_json()})
    assert reports[-1]["final"] and reports[-1]["error"] == "SystemExit: 3 raised inside the trial"
    assert json.loads(reports[-1]["worker"])["host"] == socket.gethostname()


def test_ray_tunes_own_stop_is_not_a_trial_error(tmp_path, monkeypatch):
    """Ray Tune stops a trial its scheduler pruned (ASHA) by sys.exit(0) inside tune.report: that
    SystemExit is Ray's, not user code's, and must leave the worker's trial as Ray expects (catching it
    as the trial's error left the driver waiting for a result forever)."""
    ray = pytest.importorskip("ray")
    from ray import tune

    from nas.engine.backends import ray_worker
    from search_spaces import ArchSpec

    space = tmp_path / _space(tmp_path)
    reports = []

    def report(result):
        reports.append(result)
        if not result["final"]:
            raise SystemExit(0)  # what ray.train's session does once the scheduler set the stop event

    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: (_ for _ in ()).throw(RuntimeError("not in Ray")))
    arch = ArchSpec.from_dict({"stem": {"type": "embed"}, "causal": True, "stages": [
        {"dim": 16, "blocks": [{"mixer": {"type": "softmax", "params": {"heads": 2}}, "ffn": {"type": "mlp", "ratio": 2}}]}]})
    with pytest.raises(SystemExit):
        ray_worker.evaluate_trial({"space": str(space), "space_yaml": space.read_text(), "seed": 0, "threads": 1,
                                   "report_every": 1, "lock_mode": "none", "latency_tables": None, "plugins": [],
                                   "arch": arch.to_json()})
    assert [r["final"] for r in reports] == [False]  # stopped at its first report, no error reported after it


# ------------------------------------------------------------------------------ at exit
# a finalizer that sends SIGINT to its own process while the interpreter shuts down (as a Ctrl-C or
# a `kill -INT` can land during torch's library finalizers), after `nas --version` has finished
SIGNAL_AT_EXIT = """
import signal
import sys
import weakref


class Token:
    pass


token = Token()
weakref.finalize(token, signal.raise_signal, signal.SIGINT)  # runs in weakref's atexit hook
sys.argv = ["nas", "--version"]
from nas.cli import main

main()
"""


def test_a_stop_signal_while_a_finished_command_exits_prints_no_traceback(tmp_path):
    """The signal's default action ends the process (status -SIGINT), silently; the output is all there."""
    (tmp_path / "run.py").write_text(SIGNAL_AT_EXIT)
    r = subprocess.run([sys.executable, str(tmp_path / "run.py")], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env=dict(os.environ), preexec_fn=default_stop_signals)
    assert "Traceback" not in r.stderr and "KeyboardInterrupt" not in r.stderr, r.stderr
    assert r.returncode == -signal.SIGINT, (r.returncode, r.stderr)
    assert r.stdout.startswith("mixer-nas "), r.stdout


def test_main_called_with_arguments_leaves_the_signal_handlers_alone(stop_signals):
    """In a process that goes on (tests, a notebook), Ctrl-C keeps raising KeyboardInterrupt."""
    from nas.cli import main

    with pytest.raises(SystemExit):
        main(["--version"])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ------------------------------------------------------------------------------ property
KINDS = ["exit_at_import", "interrupt_at_import", "raise_after_registering", "exit_in_forward", "signal_at_import"]
_COUNTER = itertools.count()


def _step(d, kind: str, form: str) -> None:
    """One plugin that breaks one rule, searched from the CLI in this process; it ends as promised
    and, if its import failed, every registry is as it was before."""
    n = next(_COUNTER)
    module = f"tplug_p{n}"
    end = {"exit_at_import": "sys.exit(0)", "interrupt_at_import": "raise KeyboardInterrupt",
           "raise_after_registering": "raise ValueError('late')",
           "signal_at_import": "signal.raise_signal(signal.SIGTERM)"}.get(kind, "")
    forward = EXIT_IN_TRAINING if kind == "exit_in_forward" else "pass"
    (d / f"{module}.py").write_text(_plugin(f"half{n}" if kind == "exit_in_forward" else "half", forward=forward, end=end))
    name = f"{module}.py" if form == "file" else module
    space = _space(d, f"s{n}.yaml", mixer=f"half{n}" if kind == "exit_in_forward" else "softmax")
    before, url = snapshot(), f"sqlite:///{d}/s{n}.db"
    r = invoke("search", "--space", space, "--study", f"s{n}", "--storage", url, "--plugin", name, cwd=d)
    if kind == "exit_in_forward":
        assert r.returncode == 0, r.stderr
        assert nas.load_trials(url, f"s{n}").error.tolist() == ["SystemExit: 3 raised inside the trial"]
        return
    if kind == "signal_at_import":
        assert r.returncode == 128 + signal.SIGTERM and r.stderr.strip() == "terminated by SIGTERM", r.stderr
    else:
        assert_one_line_error(r, f"--plugin: plugin {name!r} failed to import: ")
    assert snapshot() == before and module not in sys.modules and not (d / f"s{n}.db").exists()


@settings(max_examples=int(os.environ.get("MIXER_NAS_PLUGIN_EXAMPLES", "6")), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(plugins=st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(["file", "module"])), min_size=1,
                        max_size=4))
def test_property_plugins_breaking_one_rule_each_end_as_promised(tmp_path_factory, stop_signals, plugins):
    """A random mix, in one process: a failed import leaves nothing behind (each reuses the mixer name
    ``half``: a leftover would make the next one fail as "registered twice"), a trial that exits fails."""
    d = tmp_path_factory.mktemp("mix")
    start, modules = snapshot(), set(sys.modules)
    sys.path.insert(0, str(d))
    try:
        for kind, form in plugins:
            _step(d, kind, form)
        (d / "tplug_fixed.py").write_text(_plugin("half"))  # nothing a failed one registered is in its way
        load_plugins(resolve_plugins(["tplug_fixed.py"], d), installed=False)
        assert "half" in MIXERS
    finally:
        sys.path.remove(str(d))
        _forget_plugins(modules)
        start.restore()  # the next example starts as this one did
