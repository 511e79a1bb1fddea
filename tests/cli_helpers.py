"""Helpers for end-to-end CLI tests: run `nas` in a subprocess, write tiny space files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

NAS = [sys.executable, "-m", "nas.cli"]

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


def write_space(dir: Path, steps: int = 5, name: str = "space.yaml", text: str | None = None) -> Path:
    p = Path(dir) / name
    p.write_text(textwrap.dedent(text if text is not None else TINY_SPACE % {"steps": steps}))
    return p


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
