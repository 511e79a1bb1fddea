"""`nas fidelity`: rank correlation of every proxy with a long reference training."""

from __future__ import annotations

import datetime
import platform
import sys
from pathlib import Path
from typing import List, Optional

import typer

from nas.cli.base import PluginOpt, app, err, user_errors
from nas.cli.options import BOOTSTRAP, FIDELITY_N, STEPS, checked_option
from nas.errors import UserError
from search_spaces.schema import Check

# two at least: the noise ceiling (one reference seed against another) is always reported
REFERENCE_SEEDS = Check(int, low=2)


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
    reference_seeds: int = checked_option(2, "--reference-seeds", check=REFERENCE_SEEDS,
                                        help="reference trainings per architecture, each from its own "
                                             "initialisation and batch order, none the proxy's (2 at least: how "
                                             "well seed 1 ranks seed 0 is the noise ceiling)"),
    scale: List[str] = typer.Option([], "--scale", help="also train each architecture at this scale and report "
                                                        "how each proxy's ranking transfers (repeatable), e.g. "
                                                        "dim=4x,depth=2x,steps=4x: a deploy profile's scale "
                                                        "(dim, depth, heads) and steps times the short steps"),
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
    Kendall tau / Spearman rho (bootstrap 95% CIs) overall and per mixer family, beside the noise
    ceiling (reference seed 1 ranks seed 0). The reference trainings never share the proxy's
    initialisation or batch order; "meets tau >= 0.6" is judged on the interval's lower end. With
    --scale: the same architectures trained wider, deeper, longer, and each proxy's tau against
    them. With --latency:
    Kendall tau and median / 90th-percentile relative error of predicted against measured latency,
    per profile and family."""
    from evaluators.fidelity import FidelityConfig
    from nas.engine.config import check_runs_here, load_checked
    from nas.engine.study_plugins import load_cli_plugins

    if not latency and (profiles or storage):
        raise UserError(f"{'--profile' if profiles else '--storage'} goes with --latency (the latency predictor's fidelity)")
    if latency and scale:
        raise UserError("--scale goes without --latency (it ranks proxies against trainings at a larger scale)")
    scales = _scales(scale)
    load_cli_plugins(plugin)
    checked = load_checked(space)
    check_runs_here(checked)
    sp = checked.space
    if latency:
        from nas.cli.latency_tables import latency_fidelity

        return latency_fidelity(sp, n, seed, out_dir, profiles, storage, _machine())
    out_dir = _out_dir(out_dir or Path("results") / f"fidelity-{sp.name}")
    cfg = FidelityConfig(n=n, seed=seed, short_steps=steps or 0, reference_steps=reference_steps or 0,
                         bootstrap=bootstrap, reference_seeds=reference_seeds, scales=scales)
    command = " ".join(sys.argv[2:]) if sys.argv[1:2] == ["fidelity"] else f"--space {space} --n {n} --seed {seed}"
    _proxy_fidelity(sp, cfg, out_dir, command)


def _scales(texts: List[str]) -> tuple:
    """Each --scale parsed (evaluators.fidelity_scale), before anything is trained."""
    from evaluators.fidelity_scale import parse_scale
    from search_spaces.schema import SettingError

    try:
        return tuple(parse_scale(t) for t in texts)
    except SettingError as e:
        raise UserError(str(e)) from None


def _out_dir(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out: cannot create {out_dir}: {e.strerror}") from None
    return out_dir


def _proxy_fidelity(sp, cfg, out_dir: Path, command: str) -> None:
    """Score the sampled architectures, write archs.csv, correlations.csv (and scale.csv with
    --scale) and fidelity.md (keeping archs.partial.csv up to date while it runs), and print tau
    with the noise ceiling per proxy."""
    import pandas as pd

    from evaluators.fidelity import correlations, run_fidelity, to_markdown
    from evaluators.fidelity_scale import scale_correlations, scale_markdown

    started = datetime.datetime.now()
    err.print(f"fidelity of space {sp.name} (task {sp.task.name}): {cfg.n} architectures, seed {cfg.seed}",
              highlight=False)

    def save_partial(rows):  # a long run that is stopped still leaves its per-arch scores
        pd.DataFrame(rows).to_csv(out_dir / "archs.partial.csv", index=False)

    df = run_fidelity(sp, cfg, log=lambda m: print(m, file=sys.stderr, flush=True), on_row=save_partial)
    (out_dir / "archs.partial.csv").unlink(missing_ok=True)
    corr = correlations(df, bootstrap=cfg.bootstrap, seed=cfg.seed)
    scorr = scale_correlations(df, cfg.scales, bootstrap=cfg.bootstrap, seed=cfg.seed)
    minutes = (datetime.datetime.now() - started).total_seconds() / 60
    header = (f"# Proxy fidelity: space `{sp.name}`\n\n"
              f"- command: `nas fidelity {command}`\n"
              f"- date: {started:%Y-%m-%d %H:%M} ({minutes:.1f} min)\n"
              f"- machine: {_machine()}\n")
    df.to_csv(out_dir / "archs.csv", index=False)
    corr.to_csv(out_dir / "correlations.csv", index=False)
    extra = scale_markdown(df, scorr, cfg.scales, df.attrs["short_steps"]) if cfg.scales else []
    if cfg.scales:
        scorr.to_csv(out_dir / "scale.csv", index=False)
    (out_dir / "fidelity.md").write_text(to_markdown(df, corr, header=header, bootstrap=cfg.bootstrap,
                                                     target=cfg.target, extra=extra))
    _print_taus(corr, cfg.target)
    _print_transfer(scorr, cfg.scales)
    err.print(f"wrote {out_dir}/fidelity.md, archs.csv, correlations.csv{', scale.csv' if cfg.scales else ''}",
              highlight=False)


def _print_taus(corr, target: float) -> None:
    """One line per proxy over all architectures: tau, the noise ceiling, rho and the verdict."""
    from evaluators.fidelity import SEED_AGREEMENT, interval, noise_ceiling, verdict

    ceiling = interval(noise_ceiling(corr, "all"))
    print(f"noise ceiling (reference seed 1 ranks seed 0): tau {ceiling}")
    c = corr[(corr["group"] == "all") & (corr["proxy"] != SEED_AGREEMENT)].sort_values("tau", ascending=False)
    for _, r in c.iterrows():
        print(f"{r['proxy']:<16} tau {interval(r)}  ceiling {ceiling}  rho {r['rho']:+.2f}  "
              f"meets tau >= {target}: {verdict(r['tau_lo'], target)}{'  (sign-corrected)' if r['sign_corrected'] else ''}")


def _print_transfer(scorr, scales) -> None:
    """Per scale, one line per proxy: tau against the scaled training, over all architectures."""
    from evaluators.fidelity import interval, verdict
    from evaluators.fidelity_scale import HOLDS

    for spec in scales:
        c = scorr[(scorr["scale"] == spec.label) & (scorr["group"] == "all")] if len(scorr) else scorr
        print(f"rank transfer to scale {spec.label}:")
        for _, r in c.sort_values("tau", ascending=False).iterrows():
            print(f"  {r['proxy']:<18} tau {interval(r)}  holds (lower end >= {HOLDS}): {verdict(r['tau_lo'], HOLDS)}")
