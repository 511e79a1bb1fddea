"""Helpers shared by the tests: run `nas` in a subprocess or in this process, write and load tiny
space files, give a child process the default stop-signal dispositions, kill a Ray worker once."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

NAS = [sys.executable, "-m", "nas"]

TINY_SPACE = """
name: e2e
task: {name: mqar, params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2, n_train: 128, n_test: 32}}
objectives: {accuracy: maximize, latency_ms: minimize}
trials: 3
train: {steps: %(steps)d, batch_size: 16, lr: 0.01}
latency: {repeats: 3, warmup: 1, max_seconds: 0.2}
arch:
  stages:
    - depth: [1, 2]
      dim: [16, 32]
      mixer:
        per_layer: true
        choices:
          softmax: {heads: [1, 2]}
          hyena: {filter_dim: [8]}
"""


RAY_SPACE = """\
name: raytiny
task:
  name: mqar
  params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2, n_train: 200, n_test: 50}
objectives:
  accuracy: maximize
  latency_ms: minimize
trials: 4
train: {steps: 20, batch_size: 16, lr: 0.01}
latency: {batch_size: 1, threads: 1, warmup: 1, repeats: 5, max_seconds: 0.2}
arch:
  stages:
    - depth: [1, 2]
      dim: [32, 64]
      mixer:
        per_layer: true
        choices:
          softmax: {heads: [1, 2, 4]}
          hyena: {filter_dim: [8, 16]}
      ffn: {type: [mlp, glu], ratio: 2}
"""


def ray_search_config(tmp_path, name, *, trials, workers=2, storage=None, space=RAY_SPACE, **options):
    """The checked config of a ray search of ``space`` (the text of a space file written to tmp_path;
    RAY_SPACE, random sampler, seed 1, heartbeat 1 s) into ``storage`` (default tmp_path/<name>.db),
    for tests that set up the study before the backend runs."""
    from nas.api import plan_search

    path = Path(tmp_path) / "space.yaml"
    path.write_text(space)
    return plan_search(str(path), study=name, storage=storage or f"sqlite:///{tmp_path}/{name}.db", trials=trials,
                       backend="ray", workers=workers, sampler="random", seed=1, heartbeat=1, options=options).config


# A study plugin (a .py file, so its text travels to every Ray worker with the study's plugins)
# whose FFN `dies_once` is an MLP that kills its process, once: the first model to start its third
# training step, in a process other than the test's, creates the marker file (atomically, so one
# process wins), writes its pid there and SIGKILLs itself; every other model trains as `mlp`.
DIES_ONCE_PLUGIN = """\
import os
import signal

from search_spaces.ffn import register_ffn

MARKER, TEST_PID = %(marker)r, %(pid)d


def kill_once():
    try:
        fd = os.open(MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


@register_ffn("dies_once")
def dies_once(dim, ratio):
    import torch

    from search_spaces.layers import Mlp

    class DiesOnce(Mlp):
        steps = 0  # training forward passes so far

        def forward(self, x):
            if self.training and torch.is_grad_enabled() and os.getpid() != TEST_PID:
                self.steps += 1
                if self.steps == 3:  # two training steps done
                    kill_once()
            return super().forward(x)

    return DiesOnce(dim, max(1, int(round(ratio * dim))))
"""


@contextlib.contextmanager
def worker_killed_once(tmp_path, marker: Path):
    """RAY_SPACE with the FFN `dies_once` of DIES_ONCE_PLUGIN (written to tmp_path/dies_once.py and
    named in the space's ``plugins:``): the first trial to reach training step 2 in a Ray worker
    kills that worker, which creates ``marker``. Yields the space's text (for ray_search_config);
    afterwards this process forgets the plugin, as a fresh one would not have it."""
    from search_spaces.ffn import FFNS

    (Path(tmp_path) / "dies_once.py").write_text(DIES_ONCE_PLUGIN % {"marker": str(marker), "pid": os.getpid()})
    ffn = "ffn: {type: [mlp, glu], ratio: 2}"
    assert ffn in RAY_SPACE
    modules = set(sys.modules)
    try:
        yield RAY_SPACE.replace(ffn, "ffn: {type: [dies_once], ratio: 2}") + "plugins: [dies_once.py]\n"
    finally:
        if "dies_once" in FFNS:
            FFNS.unregister("dies_once")
        for name in set(sys.modules) - modules:
            if name.startswith("mixer_nas_plugin_dies_once_"):
                del sys.modules[name]


def write_space(dir: Path, steps: int = 5, name: str = "space.yaml", text: str | None = None) -> Path:
    p = Path(dir) / name
    p.write_text(textwrap.dedent(text if text is not None else TINY_SPACE % {"steps": steps}))
    return p


def load_space_text(text: str):
    """``evaluators.load_space`` of ``text`` (dedented) written to a fresh temporary file: the space
    bound to its task."""
    from evaluators import load_space

    p = Path(tempfile.mkdtemp()) / "s.yaml"
    p.write_text(textwrap.dedent(text))
    return load_space(str(p))


def default_stop_signals():
    """A shell that runs the suite in the background leaves SIGINT ignored (nohup: SIGHUP), and a
    process started so keeps ignoring it, as it should: give the search the default dispositions
    (``subprocess.Popen(..., preexec_fn=default_stop_signals)``)."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)


def run_nas(*args, cwd, timeout=300, check=False) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", PYTHONUNBUFFERED="1")
    r = subprocess.run([*NAS, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"nas {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def invoke(*args, cwd, check=False) -> Result:
    """Run the CLI in this process (fast: no interpreter start-up, no re-import of torch)."""
    import os

    from typer.testing import CliRunner

    from nas.cli import app

    old = os.getcwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    finally:
        os.chdir(old)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    res = Result(r.exit_code, r.stdout, r.stderr)
    if check and res.returncode != 0:
        raise AssertionError(f"nas {' '.join(map(str, args))} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def assert_one_line_error(r, *fragments, code: int = 2) -> str:
    """The command failed with ``code``, no traceback, and one stderr line ``error: ...`` holding
    every fragment; returns that line."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def retried_study(storage=None):
    """A study whose trials were run again, each way a search runs one again: #0 went stale and was
    queued again as #1 (Optuna's retry callback, two retries allowed), which went stale too (#2, its
    series [0, 1]); #3 was interrupted and queued again as #4 (``retry_of``), which went stale (#5
    inherits ``retry_of`` 3 with its predecessor's user attributes); #6 ran once. Completes 2, 5, 6."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    from nas.store.trial_attrs import ERROR_KEY, INTERRUPTED_KEY, RETRY_OF_KEY

    study = optuna.create_study(study_name="retried", storage=storage)
    went_stale = RetryHeartbeatStaleTrialCallback(max_retry=2)

    def fail(**user_attrs):
        trial = study.ask()
        for k, v in user_attrs.items():
            trial.set_user_attr(k, v)
        study.tell(trial, state=TrialState.FAIL)
        return study.get_trials()[trial.number]

    went_stale(study, fail())
    went_stale(study, fail())
    study.tell(study.ask(), 1.0)
    third = fail(**{INTERRUPTED_KEY: True, ERROR_KEY: "interrupted by Ctrl-C"})
    study.enqueue_trial(third.params, user_attrs={RETRY_OF_KEY: third.number})
    went_stale(study, fail())
    study.tell(study.ask(), 2.0)
    study.tell(study.ask(), 3.0)
    return study
