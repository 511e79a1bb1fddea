"""Full training of one architecture into a folder, with checkpoints and resume (`nas train`).

The folder's files are described in :mod:`nas.models.folder`. A run writes train.json and arch.json
first, then ``checkpoint.pt`` every ``checkpoint_every`` steps (weights, optimizer, RNG states,
step, loss history; each write is a new file renamed over the old, so a kill never leaves half
a checkpoint). Run again with the same folder, it continues from the last checkpoint and ends
with the weights an uninterrupted run has. At the end: model.safetensors, the final evaluation on
the task's test split (held out from the search when the task has a validation split), costs
measured again on the trained model, metrics.json and loss.png; the checkpoint is then removed.

A folder is refused (nothing written) when it holds another run: another architecture, task,
seed or training settings (:data:`nas.models.train_spec.IDENTITY_KEYS`), or files that are not a run's.
So is a model whose training would not fit in this machine's memory (:func:`check_trains_here`).
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from nas.engine import interrupts
from nas.errors import UserError
from nas.models.folder import (
    ARCH_FILE,
    CHECKPOINT_FILE,
    LOSS_FILE,
    METRICS_FILE,
    TRAIN_FILE,
    WEIGHTS_FILE,
    read_json,
    save_weights,
    write_atomic,
    write_json,
)
from nas.models.train_spec import IDENTITY_KEYS, TrainSpec

__all__ = ["RunState", "check_out_dir", "check_trains_here", "cost_metrics", "final_metrics", "train"]


def _first_difference(a, b, path: str = "") -> Optional[tuple[str, object, object]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
            if d:
                return d
        return None
    return None if a == b else (path, a, b)


def _check_writable_dir(out: Path) -> None:
    """UserError unless a run can write into ``out``: the folder, or the nearest folder above it
    that exists (where ``out`` will be made), must be a folder this user can write. Checked before
    anything is written, so a read-only place ends in one line, not a traceback after the set-up."""
    place = out.absolute()
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise UserError(f"--out {out}: {place} is a file, not a folder, so {out} cannot be made; choose another --out")
    if not os.access(place, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: the folder {place} is not writable (permission denied); choose another --out, "
                        f"or make {place} writable")


def check_out_dir(out: Path, spec: TrainSpec) -> str:
    """What ``out`` holds for this run: "new", "resume" or "done". UserError (nothing written)
    when it holds another run or files that are not a run's."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        _check_writable_dir(out)
        return "new"
    if not (out / TRAIN_FILE).is_file():
        raise UserError(f"--out {out}: the folder is not empty and holds no `nas train` run (no {TRAIN_FILE}); "
                        f"choose a new or empty folder")
    stored = read_json(out / TRAIN_FILE)
    mine = spec.record()
    diff = _first_difference({k: stored.get(k) for k in IDENTITY_KEYS}, {k: mine[k] for k in IDENTITY_KEYS})
    if diff is not None:
        key, was, now = diff
        what = "a run of another architecture" if key == "arch_id" else "another run"
        raise UserError(f"--out {out}: holds {what} ({key} {was!r}: {stored.get('summary', '')}); this run has "
                        f"{key} {now!r}; choose another --out, or remove the folder to start over")
    if (out / METRICS_FILE).is_file() and (out / WEIGHTS_FILE).is_file():
        return "done"
    _check_writable_dir(out)
    return "resume"


def check_trains_here(spec: TrainSpec) -> None:
    """UserError naming the architecture (its file, or its trial) when training ``spec`` would not
    fit in this machine's memory: its training, its evaluation in batches of up to 256, and the
    copy its costs are timed on (``evaluators.model_memory``, before anything is allocated)."""
    from evaluators import fit
    from evaluators.errors import TooLarge
    from evaluators.model_memory import EVAL_BATCH, Need, check_need, proxy_need
    from search_spaces.schema import SettingError

    s = spec.settings
    need = proxy_need(spec.arch, spec.io, s.train.batch_size, eval_batch=max(EVAL_BATCH, s.latency.batch_size))
    src = spec.source
    where = f"--arch {src['arch']}" if "arch" in src else f"trial {src.get('trial')} of study {src.get('study')}"
    try:  # + the copy of the trained weights that timed_costs moves to the latency device
        check_need(Need(need.bytes + 4 * need.params, need.params, need.what), fit.available_memory())
    except TooLarge as e:
        raise UserError(f"{where}: {e}") from None
    except SettingError as e:  # a malformed $MIXER_NAS_MEMORY
        raise UserError(str(e)) from None


class RunState:
    """The model, the training loop and the loss history of a run, saved to and restored from
    ``checkpoint.pt``."""

    def __init__(self, spec: TrainSpec):
        from evaluators.tasks import make_task
        from evaluators.train import TrainLoop
        from search_spaces import build_model

        s = spec.settings
        self.spec = spec
        self.task = make_task(s.task, s.task_params, seed=s.seed)
        torch.manual_seed(spec.seed)
        self.model = build_model(spec.arch, spec.io)
        self.loop = TrainLoop(self.model, self.task, s.train, seed=spec.seed)
        self.losses: list[float] = []
        self.seconds = 0.0  # training time over all sessions of the run

    @property
    def step(self) -> int:
        return self.loop.step

    def save(self, path: Path) -> None:
        state = {"arch_id": self.spec.arch.arch_id, "model": self.model.state_dict(), "loop": self.loop.state_dict(),
                 "losses": list(self.losses), "seconds": self.seconds}
        write_atomic(path, lambda tmp: torch.save(state, tmp))

    def load(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a damaged file is named, not shown as a traceback
            raise UserError(f"{path}: cannot be read as a checkpoint ({type(e).__name__}); remove it to start over") from None
        if state.get("arch_id") != self.spec.arch.arch_id:
            raise UserError(f"{path}: holds a checkpoint of architecture {state.get('arch_id')}, not "
                            f"{self.spec.arch.arch_id}; choose another --out")
        self.model.load_state_dict(state["model"])
        self.loop.load_state_dict(state["loop"])
        self.losses, self.seconds = list(state["losses"]), float(state["seconds"])


def _train_steps(run: RunState, ckpt: Path, every: int, on_step) -> None:
    """Steps until the budget; a checkpoint every ``every`` steps and at the end. A stop signal
    (``nas.engine.interrupts``) waits for the step it lands in, then the state is saved before it ends
    the run."""
    steps, cfg = run.spec.steps, run.spec.settings.train
    prev_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        while run.step < steps:
            t0 = time.perf_counter()
            with interrupts.deferred():
                run.losses.append(run.loop.train_step())
                run.seconds += time.perf_counter() - t0
            if run.step % every == 0 or run.step == steps:
                run.save(ckpt)
            if on_step is not None:
                on_step(run.step, run.losses[-1])
    except interrupts.Interrupted:
        run.save(ckpt)  # every state change of the step it landed in is done: a consistent checkpoint
        raise
    finally:
        torch.set_num_threads(prev_threads)


def final_metrics(model, task, eval_samples: int = 0) -> dict:
    """Accuracy, mean cross-entropy (``loss``, nats per target) and the task's own metrics
    (e.g. ``bits_per_byte``) on the test split, and on the validation split as ``val_<name>``
    when the task has one (the split its search was scored on)."""
    from evaluators.train import evaluate_split

    out = {}
    for split, prefix in (("test", ""), ("val", "val_")):
        if split not in task.splits:
            continue
        acc, loss = evaluate_split(model, task, eval_samples, split=split)
        out.update({f"{prefix}{k}": v for k, v in {"accuracy": acc, "loss": loss, **task.scores(acc, loss)}.items()})
    return out


def cost_metrics(model, spec: TrainSpec, task, log: Callable[[str], None] = lambda m: None) -> dict:
    """The costs a search measures, measured again on the trained model (a copy: timing moves
    it to the latency device and dtype): params, flops, decode state, peak memory, latency (and
    decode time when the space asks for it), the space's user metrics that run on a trained
    model, and the ``metric@profile`` costs the search measured at deployment profiles
    (``evaluators.profile_costs``: the architecture scaled and built at the profile's shape; costs do
    not depend on the weights). A profile that cannot be measured (out of memory there, say) is
    logged and named under ``profile_errors``; the other metrics stand."""
    from evaluators.errors import TrialFailure
    from evaluators.evaluation import static_costs, timed_costs
    from evaluators.metrics import compute_user_metrics
    from evaluators.profile_costs import measure_profile

    s = spec.settings
    out = static_costs(model, spec.io)
    out.update(compute_user_metrics(s.metrics, model, task, s, at="trained"))
    out.update(timed_costs(copy.deepcopy(model), spec.io, s))
    for request in s.profiles:
        try:
            out.update(measure_profile(spec.arch, spec.io, request, s.latency, seed=spec.seed))
        except TrialFailure as e:
            log(f"not measured: {e}")
            out.setdefault("profile_errors", {})[request.profile.name] = str(e)
    return out


def _plot_losses(losses: list[float], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    y = np.asarray(losses, dtype=float)
    w = max(1, len(y) // 50)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(1, len(y) + 1), y, color="0.75" if w > 1 else "C0", lw=0.8, label="per step")
    if w > 1:
        ax.plot(np.arange(w, len(y) + 1), np.convolve(y, np.ones(w) / w, mode="valid"), lw=1.6, label=f"mean of {w}")
    ax.set(xlabel="step", ylabel="training loss (nats)", title=title)
    ax.legend()
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def _finish(run: RunState, out: Path, eval_samples: int, log) -> dict:
    model = run.model.eval()
    save_weights(model, out / WEIGHTS_FILE)
    metrics = {"split": "test", **final_metrics(model, run.task, eval_samples)}
    metrics.update(cost_metrics(model, run.spec, run.task, log))
    metrics.update(steps=run.step, train_seconds=run.seconds,
                   final_train_loss=run.losses[-1] if run.losses else float("nan"))
    _plot_losses(run.losses, run.spec.arch.summary(), out / LOSS_FILE)
    write_json(out / METRICS_FILE, metrics)
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)
    return metrics


def train(spec: TrainSpec, out, *, checkpoint_every: int = 200, eval_samples: int = 0,
          on_step: Optional[Callable[[int, float], None]] = None,
          log: Callable[[str], None] = lambda m: None) -> tuple[dict, Optional[torch.nn.Module]]:
    """Train ``spec`` into folder ``out`` (new, or holding this run: then it resumes, or it is
    done and nothing is trained); UserError, nothing written, when it would not fit in this
    machine's memory. Returns (metrics, the trained model; None when the folder
    held the finished run)."""
    out = Path(out)
    state = check_out_dir(out, spec)
    if state == "done":
        log(f"{out} already holds this finished run")
        return read_json(out / METRICS_FILE), None
    check_trains_here(spec)
    if state == "new":
        try:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / ARCH_FILE, spec.arch.to_dict())
            write_json(out / TRAIN_FILE, spec.record())
        except OSError as e:  # made read-only since the check, or a full disk
            raise UserError(f"--out {out}: cannot be written ({e.strerror or e})") from None
    run = RunState(spec)
    ckpt = out / CHECKPOINT_FILE
    if ckpt.is_file():
        run.load(ckpt)
        log(f"resuming from step {run.step}/{spec.steps} ({ckpt})")
    _train_steps(run, ckpt, checkpoint_every, on_step)
    return _finish(run, out, eval_samples, log), run.model
