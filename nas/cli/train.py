"""`nas train` (full training of chosen architectures) and `nas export-model` (TorchScript, ONNX)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from nas.cli.base import PluginOpt, StorageOpt, TrustCodeOpt, app, err, out, storage_for, user_errors
from nas.cli.options import STEPS, checked_option
from nas.errors import UserError
from search_spaces.schema import Check

CHECKPOINT_EVERY = Check(int, low=1)
EVAL_SAMPLES = Check(int, low=0)
SHOWN = ("accuracy", "loss", "bits_per_byte", "val_bits_per_byte", "params", "flops", "latency_ms", "peak_mem_mb",
         "state_mb", "decode_ms", "train_seconds")


class StepProgress:
    """A progress bar on a terminal; otherwise a plain line every tenth of the run."""

    def __init__(self, total: int, label: str):
        self.total, self.label = total, label
        self.every = max(1, total // 10)
        self.bar = None
        self.t0 = time.monotonic()

    def __enter__(self):
        if err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), console=err)
            self.bar.__enter__()
            self.task = self.bar.add_task(self.label, total=self.total, loss="-")
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}")
        elif step % self.every == 0 or step == self.total:
            print(f"{self.label}: step {step}/{self.total} loss {loss:.4f} ({time.monotonic() - self.t0:.0f} s)",
                  file=sys.stderr, flush=True)


def _specs(study, storage, trial, from_front, arch, space, steps, seed, plugins, trust_code) -> list:
    from nas.engine.study_plugins import load_cli_plugins
    from nas.models.train_spec import front_trials, spec_from_arch, spec_from_trial

    cli_plugins = load_cli_plugins(plugins)
    if arch is not None:
        if study is not None or trial is not None or from_front:
            raise UserError("--arch trains an architecture file on --space; leave out --study, --trial and --trials-from-front")
        if space is None:
            raise UserError("--arch needs --space (the space whose task and training settings to use)")
        return [spec_from_arch(arch, space, steps=steps, seed=seed, plugins=tuple(cli_plugins))]
    if study is None:
        raise UserError("say what to train: --study S --trial N, --study S --trials-from-front, or --arch FILE --space S")
    if (trial is None) == (not from_front):
        raise UserError("--study needs exactly one of --trial N and --trials-from-front")
    url = storage_for(study, storage)
    numbers = front_trials(url, study) if from_front else [trial]
    return [spec_from_trial(url, study, n, steps=steps, seed=seed, space=space, trust_code=trust_code)
            for n in numbers]


def _print_metrics(metrics: dict, title: str) -> None:
    out.print(title, highlight=False, markup=False)
    t = Table(show_header=False)
    t.add_column("metric", style="bold")
    t.add_column("value", justify="right")
    for k in SHOWN:
        v = metrics.get(k)
        if isinstance(v, (int, float)):
            t.add_row(k, f"{v:,}" if isinstance(v, int) else f"{v:.4g}")
    out.print(t)


@app.command("train")
@user_errors
def train_cmd(
    study: Optional[str] = typer.Option(None, "--study", help="study holding the trial"),
    storage: Optional[str] = StorageOpt,
    trial: Optional[int] = typer.Option(None, "--trial", help="trial number (a COMPLETE trial; see `nas pareto`)"),
    from_front: bool = typer.Option(False, "--trials-from-front", help="train every Pareto-front trial, each into OUT/trial-N"),
    arch: Optional[str] = typer.Option(None, "--arch", help="arch JSON file (or a `nas train` folder) instead of a trial; needs --space"),
    space: Optional[str] = typer.Option(None, "--space", help="space (name or file) whose task and training settings to use "
                                                              "(default: the study's); its task must be the one searched on"),
    steps: int = checked_option(..., "--steps", check=STEPS, help="training steps (the full budget)"),
    out_dir: Path = typer.Option(..., "--out", help="output folder; run again with the same folder to resume"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed of the initial weights and batch order (default: the study's)"),
    checkpoint_every: int = checked_option(200, "--checkpoint-every", check=CHECKPOINT_EVERY, help="steps between checkpoints"),
    eval_samples: int = checked_option(0, "--eval-samples", check=EVAL_SAMPLES, help="test samples for the final evaluation (0 = all)"),
    plugin: List[str] = PluginOpt,
    trust_code: bool = TrustCodeOpt,
):
    """Train a chosen architecture at full budget on its task: checkpoints, resume, final test
    evaluation, costs measured on the trained model. Writes OUT/model.safetensors, arch.json,
    train.json, metrics.json and loss.png (load with nas.load_model(OUT))."""
    from nas.models.training import check_out_dir, check_trains_here, train

    specs = _specs(study, storage, trial, from_front, arch, space, steps, seed, plugin, trust_code)
    outs = [out_dir / f"trial-{s.source['trial']}" for s in specs] if from_front else [out_dir]
    states = [check_out_dir(folder, spec) for spec, folder in zip(specs, outs)]  # all, before anything is written
    for spec in (spec for spec, state in zip(specs, states) if state != "done"):
        check_trains_here(spec)  # each fits this machine's memory, before anything is written
    for spec, folder, state in zip(specs, outs, states):
        if state != "done":
            err.print(f"training {spec.describe()} for {spec.steps} steps into {folder}", highlight=False, markup=False)
        with StepProgress(spec.steps, folder.name or str(folder)) as progress:
            try:
                metrics, _ = train(spec, folder, checkpoint_every=checkpoint_every, eval_samples=eval_samples,
                                   on_step=progress, log=lambda m: err.print(m, highlight=False, markup=False))
            except KeyboardInterrupt:
                err.print(f"stopped; run the same command again to resume from the last checkpoint in {folder}",
                          highlight=False, markup=False)
                raise
        _print_metrics(metrics, f"{folder}: {spec.arch.summary()} (test split)")


@app.command("export-model")
@user_errors
def export_model_cmd(
    folder: Path = typer.Argument(..., help="a `nas train` output folder"),
    format: str = typer.Option("torchscript", "--format", help="torchscript | onnx"),
    out_file: Optional[Path] = typer.Option(None, "--out", help="file to write (default: FOLDER/model.torchscript.pt or FOLDER/model.onnx)"),
    trust_code: bool = TrustCodeOpt,
):
    """Export a trained model (fixed input shape, any batch size) and check the file's outputs
    against the model's."""
    from nas.models.export import FORMATS, ExportError, export_model
    from nas.models.loading import load_model

    if format not in FORMATS:
        raise UserError(f"--format: {format!r} is not one of {sorted(FORMATS)}")
    model = load_model(folder, trust_code=trust_code)
    target = out_file or folder / FORMATS[format]
    try:
        done = export_model(model, format, target)
    except ExportError as e:
        raise UserError(f"{folder}: {e}") from None
    check = ("outputs not checked (onnxruntime is not installed)" if done["max_abs_diff"] is None
             else f"outputs match the model (max |difference| {done['max_abs_diff']:.2g})")
    err.print(f"wrote {target} ({format}); {check}", highlight=False, markup=False)
