"""`nas fidelity`: rank correlation of every proxy with a long reference training."""

from __future__ import annotations

import datetime
import platform
import sys
from pathlib import Path
from typing import List, Optional

import typer

from nas.cli.base import PluginOpt, app, err, user_errors
from nas.cli.options import BOOTSTRAP, FIDELITY_N, REFERENCE_SEEDS, STEPS, checked_option
from nas.errors import UserError


def _machine() -> str:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, torch {torch.__version__} (CPU threads {torch.get_num_threads()})"


@app.command()
@user_errors
def fidelity(
    space: str = typer.Option(..., "--space", help="built-in space name or path to a space YAML file"),
    n: int = checked_option(20, "--n", check=FIDELITY_N, help="number of architectures to sample (3 at least, to rank)"),
    seed: int = typer.Option(0, "--seed"),
    steps: Optional[int] = checked_option(None, "--steps", check=STEPS, help="short-training steps (default: the space's train.steps)"),
    reference_steps: Optional[int] = checked_option(None, "--reference-steps", check=STEPS, help="reference training steps (default: 4x the short steps)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output folder [default: results/fidelity-<space>/]"),
    bootstrap: int = checked_option(1000, "--bootstrap", check=BOOTSTRAP, help="bootstrap resamples for the 95% intervals"),
    reference_seeds: int = checked_option(1, "--reference-seeds", check=REFERENCE_SEEDS,
                                        help="reference trainings per architecture (seeds); >= 2 also reports "
                                             "how well one seed ranks another (the noise ceiling)"),
    latency: bool = typer.Option(False, "--latency", help="instead: the latency predictor (block tables) against "
                                                          "measured latency, at each profile"),
    profiles: List[str] = typer.Option([], "--profile", help="--latency: a deploy: profile (repeatable) "
                                                            "[default: every profile and the task's shape]"),
    storage: Optional[str] = typer.Option(None, "--storage", help="--latency: predict from the block tables of this "
                                                                 "storage (filling what they lack) [default: a table "
                                                                 "filled by this run]"),
    plugin: List[str] = PluginOpt,
):
    """Score N sampled architectures with every proxy and a long reference training; report
    Kendall tau / Spearman rho (bootstrap 95% CIs) overall and per mixer family. With --latency:
    Kendall tau and median / 90th-percentile relative error of predicted against measured latency,
    per profile and family."""
    from evaluators.fidelity import FidelityConfig
    from nas.engine.config import check_runs_here, load_checked
    from nas.engine.study_plugins import load_cli_plugins

    if not latency and (profiles or storage):
        raise UserError(f"{'--profile' if profiles else '--storage'} goes with --latency (the latency predictor's fidelity)")
    load_cli_plugins(plugin)
    checked = load_checked(space)
    check_runs_here(checked)
    sp = checked.space
    if latency:
        from nas.cli.latency_tables import latency_fidelity

        return latency_fidelity(sp, n, seed, out_dir, profiles, storage, _machine())
    out_dir = _out_dir(out_dir or Path("results") / f"fidelity-{sp.name}")
    cfg = FidelityConfig(n=n, seed=seed, short_steps=steps or 0, reference_steps=reference_steps or 0,
                         bootstrap=bootstrap, reference_seeds=reference_seeds)
    command = " ".join(sys.argv[2:]) if sys.argv[1:2] == ["fidelity"] else f"--space {space} --n {n} --seed {seed}"
    _proxy_fidelity(sp, cfg, out_dir, command)


def _out_dir(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out: cannot create {out_dir}: {e.strerror}") from None
    return out_dir


def _proxy_fidelity(sp, cfg, out_dir: Path, command: str) -> None:
    """Score the sampled architectures, write archs.csv, correlations.csv and fidelity.md (keeping
    archs.partial.csv up to date while it runs), and print tau and rho per proxy."""
    import pandas as pd

    from evaluators.fidelity import correlations, run_fidelity, to_markdown

    started = datetime.datetime.now()
    err.print(f"fidelity of space {sp.name} (task {sp.task.name}): {cfg.n} architectures, seed {cfg.seed}",
              highlight=False)

    def save_partial(rows):  # a long run that is stopped still leaves its per-arch scores
        pd.DataFrame(rows).to_csv(out_dir / "archs.partial.csv", index=False)

    df = run_fidelity(sp, cfg, log=lambda m: print(m, file=sys.stderr, flush=True), on_row=save_partial)
    (out_dir / "archs.partial.csv").unlink(missing_ok=True)
    corr = correlations(df, bootstrap=cfg.bootstrap, seed=cfg.seed)
    minutes = (datetime.datetime.now() - started).total_seconds() / 60
    header = (f"# Proxy fidelity: space `{sp.name}`\n\n"
              f"- command: `nas fidelity {command}`\n"
              f"- date: {started:%Y-%m-%d %H:%M} ({minutes:.1f} min)\n"
              f"- machine: {_machine()}\n")
    df.to_csv(out_dir / "archs.csv", index=False)
    corr.to_csv(out_dir / "correlations.csv", index=False)
    (out_dir / "fidelity.md").write_text(to_markdown(df, corr, header=header, bootstrap=cfg.bootstrap))
    c = corr[corr["group"] == "all"].sort_values("tau", ascending=False)
    for _, r in c.iterrows():
        print(f"{r['proxy']:<16} tau {r['tau']:+.2f} [{r['tau_lo']:+.2f}, {r['tau_hi']:+.2f}]  "
              f"rho {r['rho']:+.2f}{'  (sign-corrected)' if r['sign_corrected'] else ''}")
    err.print(f"wrote {out_dir}/fidelity.md, archs.csv, correlations.csv", highlight=False)
