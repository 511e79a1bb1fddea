"""Rank transfer across scale: does a proxy's ranking survive training the architectures bigger?

Users train the chosen architecture wider, deeper and longer than the proxy (``nas train``,
deployment profiles). ``nas fidelity --scale dim=4x,depth=2x,steps=4x`` trains each sampled
architecture once more at that scale and ranks every proxy (and the small-scale reference)
against the scaled model's test accuracy.

A scale is written as a deployment profile's ``scale`` (``dim``, ``depth`` and ``heads``: see
:mod:`search_spaces.deploy_profiles`) plus ``steps``: the scaled training runs ``steps`` times the
proxy's short steps, with the reference's schedule (warm-up, cosine decay to 10% of lr, the full
test set). The scaled ArchSpec is :func:`~search_spaces.deploy_profiles.scale_arch`'s, the code
that scales a profile's model, so "4x wider" means here what it means for a deployed model. The
scaled training has its own seed (:func:`scaled_seed`), shared with neither the proxy nor any
reference. Learning rate and batch size are the space's, as ``nas train`` keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from evaluators.cost import count_params
from evaluators.fidelity import PROXIES, correlations, interval, reference_seed, verdict
from evaluators.train import TrainConfig, train_proxy
from search_spaces.deploy_profiles import Profile, Scale, profile_model
from search_spaces.failures import failure_reason
from search_spaces.schema import Check, SettingError, from_mapping

__all__ = ["HOLDS", "ScaleSpec", "parse_scale", "scale_correlations", "scale_markdown", "scaled_seed"]

HOLDS = 0.5  # a ranking "holds" at a scale when the lower end of its tau interval reaches this
STEPS = Check(int, low=1, what="a whole factor >= 1, written 4 or 4x")
KEYS = ("dim", "depth", "heads", "steps")


@dataclass(frozen=True)
class ScaleSpec:
    """One ``--scale``: the profile scale of the model and the factor on the proxy's steps."""

    scale: Scale
    steps: int = 1

    @property
    def label(self) -> str:
        heads = "" if self.scale.heads == "scale" else f",heads={self.scale.heads}"
        return f"dim={self.scale.dim}x,depth={self.scale.depth}x{heads},steps={self.steps}x"

    def profile(self) -> Profile:
        """A deployment profile at this scale (the task's own shape)."""
        return Profile(name="scaled", scale=self.scale)

    def score(self, row: dict, i: int, arch, task, short: TrainConfig, cfg) -> None:
        """Add ``scaled<i>_params`` and ``scaled<i>_accuracy`` to ``row``: ``arch`` at this scale,
        trained ``steps`` times the ``short`` steps with the reference's schedule, seed
        :func:`scaled_seed`. A failure is ``scaled<i>_error``; the rest of the row stays."""
        train = replace(short, steps=short.steps * self.steps, eval_samples=0, decay_to=TrainConfig.decay_to)
        seed = scaled_seed(cfg.seed, cfg.reference_seeds, i)
        try:
            model = _seeded_scaled(arch, task.io, self, seed)
            row[f"scaled{i}_params"] = count_params(model)
            row[f"scaled{i}_accuracy"] = train_proxy(model, task, train, seed=seed).accuracy
        except Exception as e:  # a scale this arch cannot take is a reason in its row
            row[f"scaled{i}_error"] = failure_reason(e)


def _factor(value: str):
    """``"4x"`` or ``"4"`` -> 4; anything else stays a string for the check to reject."""
    digits = value[:-1] if value[-1:] in ("x", "X") else value
    return int(digits) if digits.isdigit() else value


def parse_scale(text: str, path: str = "--scale") -> ScaleSpec:
    """``"dim=4x,depth=2x,steps=4x"`` (any of ``dim``, ``depth``, ``heads``, ``steps``; a missing
    factor is 1x) -> :class:`ScaleSpec`. :class:`SettingError` naming ``--scale.<key>`` for an
    unknown key, a factor that is not a whole number >= 1, or a scale that changes nothing."""
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items or any("=" not in part for part in items):
        raise SettingError(path, f"{text!r} is not allowed (write key=factor pairs, e.g. dim=4x,depth=2x,steps=4x; "
                                 f"keys: {', '.join(KEYS)})")
    d = {}
    for part in items:
        key, _, value = (s.strip() for s in part.partition("="))
        if key in d:
            raise SettingError(f"{path}.{key}", "given twice")
        d[key] = value if key == "heads" else _factor(value)
    steps = STEPS.coerce(d.pop("steps", 1), f"{path}.steps")
    spec = ScaleSpec(from_mapping(Scale, d, path), steps)
    if spec.scale.identity and steps == 1:
        raise SettingError(path, f"{text!r} is the proxy itself (give dim, depth or steps above 1x)")
    return spec


def scaled_seed(seed: int, reference_seeds: int, i: int) -> int:
    """The seed of the training at scale ``i``: the next independent seed after the references'."""
    return reference_seed(seed, reference_seeds + i)


def _seeded_scaled(arch, io, spec: ScaleSpec, seed: int):
    import torch

    torch.manual_seed(seed)
    return profile_model(arch, io, spec.profile())


def scale_correlations(df: pd.DataFrame, scales, *, bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Every proxy, and the small-scale reference, ranked against each scale's accuracy: the rows
    of :func:`~evaluators.fidelity.correlations` with a ``scale`` column (the scale's label)."""
    parts = []
    for i, spec in enumerate(scales):
        c = correlations(df, bootstrap=bootstrap, seed=seed, against=f"scaled{i}_accuracy",
                         proxies={**PROXIES, "reference_accuracy": +1})
        if not c.empty:
            parts.append(c.assign(scale=spec.label))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def scale_markdown(df: pd.DataFrame, corr: pd.DataFrame, scales, short_steps: int) -> list[str]:
    """The report's section: per scale, how much bigger the models are, and one row per proxy with
    tau over all architectures and per family."""
    lines = ["## Rank transfer across scale", "",
             "Each architecture trained once more at the scale below (its own seed, the reference's schedule); "
             "Kendall tau of each proxy against that accuracy, 95% bootstrap intervals. `holds` = the lower end "
             f"of the interval over all architectures >= {HOLDS}. `reference_accuracy` is the small-scale reference.",
             ""]
    for i, spec in enumerate(scales):
        c = corr[corr["scale"] == spec.label] if len(corr) else corr
        lines += [f"### scale {spec.label}", "", _growth(df, i, spec, short_steps), ""]
        if c.empty:
            lines += ["No architecture was scored at this scale.", ""]
            continue
        groups = ["all"] + sorted(g for g in c["group"].unique() if g != "all")
        lines += ["| proxy | " + " | ".join(f"tau {g} [95% CI]" for g in groups) + f" | holds (>= {HOLDS}) |",
                  "|---|" + "---|" * (len(groups) + 1)]
        alls = c[c["group"] == "all"].sort_values("tau", ascending=False, na_position="last")
        for proxy, lo in zip(alls["proxy"], alls["tau_lo"]):
            cells = [interval(_row(c, proxy, g)) for g in groups]
            lines.append(f"| {proxy} | " + " | ".join(cells) + f" | {verdict(lo, HOLDS)} |")
        lines.append("")
    return lines


def _row(c: pd.DataFrame, proxy: str, group: str):
    r = c[(c["proxy"] == proxy) & (c["group"] == group)]
    return None if r.empty else r.iloc[0]


def _growth(df: pd.DataFrame, i: int, spec: ScaleSpec, short_steps: int) -> str:
    """One line: the scaled models' parameter counts against the proxy's, and the steps."""
    col = f"scaled{i}_params"
    ok = df[df[col].notna()] if col in df else df.iloc[0:0]
    ratio = float(np.median(ok[col] / ok["params"])) if len(ok) else float("nan")
    return (f"{len(ok)} of {len(df)} architectures trained at this scale, {short_steps * spec.steps} steps; "
            f"parameters {ratio:.1f}x the proxy's (median).")
