"""Proxy fidelity: how well each cheap score ranks architectures like a long reference training.

``run_fidelity`` samples N architectures of a space (Optuna's RandomSampler, seeded), scores each
with every proxy (all zero-cost proxies, params, FLOPs, and a short training at the space's budget
or ``short_steps``: its test accuracy, its test loss ``short_test_loss``, ``train_loss_sum`` and
``final_loss``), then trains the architecture ``reference_seeds`` (K >= 2) more times for
``reference_steps`` and takes the mean test accuracy as the reference (with the standard cosine
decay to 10% of lr, whatever the space's short schedule is).

The references are independent of the proxy: the proxy is built and its batches drawn with seed
``seed``; reference k with :func:`reference_seed` ``(seed, k)`` (``seed + 1000 (k + 1)``, the
``train.seeds`` stride of :mod:`evaluators.seeds`), a fresh initialisation and another batch order.
A reference that continued the proxy's own run would reward the proxy for agreeing with itself.
The rank agreement of reference seed 1 with seed 0 is the noise ceiling, always reported beside
each tau: a proxy cannot be expected to rank the reference better than the reference ranks itself.
``correlations`` gives Kendall's tau-b and Spearman's rho of each proxy against the reference,
with percentile-bootstrap 95% intervals, over all architectures and within each mixer family
(the dominant family of an arch's blocks; a tie is ``mixed``). :func:`verdict` judges "meets
tau >= target" on the interval's lower end, so a lucky sample does not pass.

With ``scales`` (see :mod:`evaluators.fidelity_scale`) each architecture is also trained wider,
deeper and longer, and the report says how each proxy's ranking transfers to that scale.

Orientation: a proxy is *sign-corrected* when lower values predict higher accuracy
(``train_loss_sum``, ``final_loss``, ``short_test_loss``): we correlate ``-proxy``, so for every row a positive tau
means "ranks like the reference". ``params`` and ``flops`` are used as "bigger is better"
(capacity) scores, as in the zero-cost literature, although as search objectives they are
minimized.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
from scipy import stats

from evaluators.cost import count_params, flops_per_sample
from evaluators.model_memory import EVAL_BATCH, check_proxy
from evaluators.seeds import seed_for
from evaluators.tasks import make_task
from evaluators.train import TrainConfig, train_proxy
from evaluators.zero_cost import ZERO_COST, compute_zero_cost, zero_cost_batch
from search_spaces.failures import failure_reason

__all__ = ["PROXIES", "SEED_AGREEMENT", "FidelityConfig", "run_fidelity", "correlations", "family_of", "rank_correlation",
           "interval", "noise_ceiling", "reference_seed", "sample_archs", "seeded_model", "to_markdown", "verdict"]

# proxy -> +1 (higher predicts better) or -1 (lower predicts better: sign-corrected)
PROXIES: dict[str, int] = {
    **{name: +1 for name in ZERO_COST},
    "params": +1,
    "flops": +1,
    "short_accuracy": +1,
    "train_loss_sum": -1,
    "final_loss": -1,
    "short_test_loss": -1,
}


@dataclass(frozen=True)
class FidelityConfig:
    n: int = 20
    seed: int = 0
    short_steps: int = 0  # 0: the space's train.steps
    reference_steps: int = 0  # 0: 4x the short steps
    zero_cost_batch: int = 64
    bootstrap: int = 1000
    reference_seeds: int = 2  # the reference is the mean over that many initialisations/data orders (>= 2)
    scales: tuple = ()  # evaluators.fidelity_scale.ScaleSpec: also train each arch at these scales (spec.score)
    target: float = 0.6  # the verdict: the tau interval's lower end >= target


def reference_seed(seed: int, k: int) -> int:
    """The seed of reference training ``k`` (0 = the first) when the proxy is trained with ``seed``:
    never the proxy's own, so no reference shares its initialisation or batch order."""
    return seed_for(seed, k + 1)


def seeded_model(arch, io, seed: int):
    """``arch`` built after ``torch.manual_seed(seed)``: the initialisation that seed gives."""
    import search_spaces

    torch.manual_seed(seed)
    return search_spaces.build_model(arch, io)


# the row of ``correlations`` that ranks one reference seed against another (a noise ceiling)
SEED_AGREEMENT = "reference seed 1 vs seed 0"


def family_of(arch) -> str:
    """The dominant mixer family of ``arch``; ``mixed`` on a tie (see ``ArchSpec.dominant_family``)."""
    return arch.dominant_family()


def sample_archs(space, n: int, seed: int) -> list:
    """``n`` distinct architectures drawn at random (Optuna RandomSampler seeded with ``seed``)."""
    import optuna

    import search_spaces

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    archs, seen = [], set()
    for _ in range(50 * n):
        arch = search_spaces.sample(space, study.ask())
        if arch.arch_id not in seen:
            seen.add(arch.arch_id)
            archs.append(arch)
        if len(archs) == n:
            break
    return archs


def run_fidelity(space, cfg: FidelityConfig, *, log: Optional[Callable[[str], None]] = None,
                 on_row: Optional[Callable[[list], None]] = None) -> pd.DataFrame:
    """One row per architecture: arch_id, family, summary, every proxy, ``reference_accuracy``
    (or ``error`` when the candidate failed). ``on_row(rows)`` is called after each architecture
    (e.g. to save partial results of a long run)."""
    if cfg.reference_seeds < 2:
        raise ValueError(f"reference_seeds must be >= 2 for the noise ceiling, not {cfg.reference_seeds}")
    task = make_task(space.task.name, space.task.params, seed=cfg.seed)
    short, reference = _schedules(space, cfg)
    batch = zero_cost_batch(task, cfg.zero_cost_batch, seed=cfg.seed)
    rows = []
    archs = sample_archs(space, cfg.n, cfg.seed)
    for i, arch in enumerate(archs):
        t0 = time.perf_counter()
        row = {"arch_id": arch.arch_id, "family": family_of(arch), "summary": arch.summary()}
        try:
            _score(row, arch, task, batch, short, reference, cfg)
        except (Exception, SystemExit) as e:  # a failing candidate (sys.exit too) is a row with a reason, never the end
            row["error"] = failure_reason(e)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if on_row is not None:
            on_row(rows)
        if log is not None:
            log(f"[{i + 1}/{len(archs)}] {_log_line(arch, row)}")
    df = pd.DataFrame(rows)
    df.attrs.update(short_steps=short.steps, reference_steps=reference.steps, n=cfg.n, seed=cfg.seed,
                    reference_seeds=cfg.reference_seeds, target=cfg.target,
                    reference_seed_values=[reference_seed(cfg.seed, k) for k in range(cfg.reference_seeds)])
    return df


def _schedules(space, cfg: FidelityConfig) -> tuple[TrainConfig, TrainConfig]:
    """The short proxy training and the reference training."""
    short = TrainConfig.from_dict(space.train)
    if cfg.short_steps:
        short = replace(short, steps=cfg.short_steps, warmup_steps=min(short.warmup_steps, cfg.short_steps))
    ref_steps = cfg.reference_steps or 4 * short.steps
    # the reference is a complete training: the standard cosine decay to 10% of lr over its own steps,
    # whatever schedule the space's short proxy uses (a short run may keep lr flat, as a prefix of a long run)
    return short, replace(short, steps=ref_steps, eval_samples=0, decay_to=TrainConfig.decay_to)


def _score(row: dict, arch, task, batch, short: TrainConfig, reference: TrainConfig, cfg: FidelityConfig) -> None:
    """Add to ``row`` the costs, every zero-cost proxy and the short training's scores at the
    proxy's initialisation (seed ``cfg.seed``), then the independent reference trainings and any
    scaled ones. What was added before a failure stays in the row. A candidate whose training
    would not fit in this machine's memory is refused before it is built (``TooLarge``)."""
    check_proxy(arch, task.io, short, eval_batch=min(EVAL_BATCH, len(task.split(task.eval_split)[0])),
                zero_cost_batch=len(batch[0]))
    model = seeded_model(arch, task.io, cfg.seed)
    row["params"] = count_params(model)
    row["flops"] = flops_per_sample(model, task.io)
    row.update(compute_zero_cost(model, task.io, *batch, tuple(ZERO_COST), seed=cfg.seed))
    r = train_proxy(model, task, short, seed=cfg.seed)
    row.update(short_accuracy=r.accuracy, train_loss_sum=r.loss_sum, final_loss=r.final_loss,
               short_test_loss=r.test_loss)
    _score_references(row, arch, task, reference, cfg)
    for i, spec in enumerate(cfg.scales):  # the same architecture trained bigger and longer
        spec.score(row, i, arch, task, short, cfg)


def _score_references(row: dict, arch, task, reference: TrainConfig, cfg: FidelityConfig) -> None:
    """``reference_accuracy`` (and ``reference_loss``): the mean over ``cfg.reference_seeds``
    trainings, each from its own initialisation and batch order (:func:`reference_seed`), never
    the proxy's; each seed's accuracy as ``reference_accuracy_seed<k>``."""
    accs, losses = [], []
    for k in range(cfg.reference_seeds):
        s = reference_seed(cfg.seed, k)
        ref = train_proxy(seeded_model(arch, task.io, s), task, reference, seed=s)
        accs.append(ref.accuracy)
        losses.append(ref.test_loss)
        row[f"reference_accuracy_seed{k}"] = ref.accuracy
    row["reference_accuracy"] = float(np.mean(accs))
    row["reference_loss"] = float(np.mean(losses))


def _log_line(arch, row: dict) -> str:
    if "error" in row:
        return f"{arch.arch_id} FAILED {row['error']} | {arch.summary()}"
    return (f"{arch.arch_id} {row['family']:<9} short acc {row['short_accuracy']:.3f} "
            f"| reference acc {row['reference_accuracy']:.3f} | {row['seconds']:.0f}s | {arch.summary()}")


def _tau_rho(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan, math.nan
    return float(stats.kendalltau(a, b).statistic), float(stats.spearmanr(a, b).statistic)


def rank_correlation(proxy: np.ndarray, reference: np.ndarray, *, bootstrap: int = 1000,
                     seed: int = 0) -> dict:
    """tau, rho and their percentile-bootstrap 95% intervals (pairs resampled with replacement).
    Values are ranked first, so infinite scores (a singular naswot kernel) rank last/first."""
    keep = ~np.isnan(proxy) & ~np.isnan(reference)
    p, r = stats.rankdata(proxy[keep]), stats.rankdata(reference[keep])
    tau, rho = _tau_rho(p, r)
    out = {"n": int(keep.sum()), "tau": tau, "rho": rho,
           "tau_lo": math.nan, "tau_hi": math.nan, "rho_lo": math.nan, "rho_hi": math.nan}
    if bootstrap and len(p) >= 3 and not math.isnan(tau):
        rng = np.random.default_rng(seed)
        taus, rhos = [], []
        for _ in range(bootstrap):
            idx = rng.integers(0, len(p), len(p))
            t, s = _tau_rho(p[idx], r[idx])
            if not math.isnan(t):
                taus.append(t)
                rhos.append(s)
        if taus:
            out.update(tau_lo=float(np.percentile(taus, 2.5)), tau_hi=float(np.percentile(taus, 97.5)),
                       rho_lo=float(np.percentile(rhos, 2.5)), rho_hi=float(np.percentile(rhos, 97.5)))
    return out


def correlations(df: pd.DataFrame, *, bootstrap: int = 1000, seed: int = 0, min_family: int = 4,
                 against: str = "reference_accuracy", proxies: Optional[dict] = None) -> pd.DataFrame:
    """One row per (proxy, group): group ``all`` and each family with >= ``min_family`` archs;
    each proxy of ``proxies`` (default :data:`PROXIES`, name -> orientation) ranked against the
    column ``against``. Against the reference, the :data:`SEED_AGREEMENT` rows (the noise
    ceiling) are added when the rows hold two reference seeds."""
    ok = df[df[against].notna()] if against in df else df.iloc[0:0]
    groups = [("all", ok)]
    groups += [(fam, g) for fam, g in ok.groupby("family") if len(g) >= min_family]
    rows = []
    for proxy, sign in (PROXIES if proxies is None else proxies).items():
        if proxy not in ok:
            continue
        for group, g in groups:
            vals = sign * g[proxy].to_numpy(dtype=float)
            res = rank_correlation(vals, g[against].to_numpy(dtype=float), bootstrap=bootstrap, seed=seed)
            rows.append({"proxy": proxy, "group": group, "sign_corrected": sign < 0, **res})
    if against == "reference_accuracy" and {"reference_accuracy_seed0", "reference_accuracy_seed1"} <= set(ok.columns):
        # the noise ceiling: one reference seed against another (no proxy can be expected to do better)
        for group, g in groups:
            res = rank_correlation(g["reference_accuracy_seed1"].to_numpy(dtype=float),
                                   g["reference_accuracy_seed0"].to_numpy(dtype=float), bootstrap=bootstrap, seed=seed)
            rows.append({"proxy": SEED_AGREEMENT, "group": group, "sign_corrected": False, **res})
    return pd.DataFrame(rows)


def verdict(tau_lo: float, target: float) -> str:
    """Whether a proxy meets "tau >= target": ``yes`` only when the lower end of its 95% interval
    does (a point estimate above the target with an interval reaching below it is ``no``);
    ``n/a`` without an interval."""
    if tau_lo is None or math.isnan(tau_lo):
        return "n/a"
    return "yes" if tau_lo >= target else "no"


def noise_ceiling(corr: pd.DataFrame, group: str) -> Optional[dict]:
    """The :data:`SEED_AGREEMENT` row of ``group`` (tau, tau_lo, tau_hi...), or None."""
    c = corr[(corr["proxy"] == SEED_AGREEMENT) & (corr["group"] == group)] if len(corr) else corr
    return None if c.empty else c.iloc[0].to_dict()


def interval(r, key: str = "tau") -> str:
    """``+0.71 [+0.47, +0.90]``: an estimate and its 95% interval."""
    if r is None:
        return "n/a"
    return f"{_fmt(r[key])} [{_fmt(r[key + '_lo'])}, {_fmt(r[key + '_hi'])}]"


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.2f}"


def to_markdown(df: pd.DataFrame, corr: pd.DataFrame, *, header: str = "", target: float = 0.6,
                bootstrap: int = 1000, extra: Optional[list] = None) -> str:
    """The fidelity report: one table over all archs, one per family, ``extra`` lines (the
    transfer across scale), and the per-arch rows."""
    lines = [header.rstrip(), ""] if header else []
    n_ok = int(df["reference_accuracy"].notna().sum()) if "reference_accuracy" in df else 0
    k = int(df.attrs.get("reference_seeds", 2) or 2)
    seeds = df.attrs.get("reference_seed_values") or []
    lines.append(f"{len(df)} architectures ({n_ok} scored); short training {df.attrs.get('short_steps')} steps "
                 f"(the proxy: seed {df.attrs.get('seed')} for its initialisation and batch order), reference "
                 f"training {df.attrs.get('reference_steps')} steps: the mean test accuracy of {k} trainings, each "
                 f"from its own initialisation and batch order (seeds {', '.join(map(str, seeds)) or 'n/a'}), none "
                 "shared with the proxy; full test set.")
    lines.append("Kendall tau-b and Spearman rho against the reference accuracy, 95% percentile-bootstrap "
                 f"intervals ({bootstrap} resamples). *Sign-corrected* proxies (lower predicts better) are "
                 "correlated as -proxy. The noise ceiling is how well reference seed 1 ranks seed 0: no proxy "
                 f"can be expected to do better. `meets` = the lower end of tau's interval >= {target}.")
    lines.append("")
    for group in ["all"] + sorted(g for g in corr["group"].unique() if g != "all"):
        c = corr[corr["group"] == group]
        if not c.empty:
            lines += _group_table(group, c, target)
    lines += list(extra or [])
    fams = df["family"].value_counts().to_dict() if "family" in df else {}
    lines.append("Families (dominant mixer family): " + ", ".join(f"{k} {v}" for k, v in sorted(fams.items()))
                 + ". Families with fewer than 4 architectures get no table of their own.")
    lines.append("")
    lines += ["<details><summary>per-architecture scores</summary>", "", *_arch_table(df), "", "</details>"]
    return "\n".join(lines) + "\n"


def _group_table(group: str, c: pd.DataFrame, target: float) -> list[str]:
    """The correlations of one group (all architectures, or a family), best tau first, the noise
    ceiling beside each tau."""
    ceiling = interval(noise_ceiling(c, group))
    lines = [f"### {'all architectures' if group == 'all' else 'family ' + group} (n = {int(c['n'].max())})", "",
             f"| proxy | orientation | Kendall tau [95% CI] | noise ceiling [95% CI] | Spearman rho [95% CI] "
             f"| meets tau >= {target} (lower end) |",
             "|---|---|---|---|---|---|"]
    for _, r in c.sort_values("tau", ascending=False, na_position="last").iterrows():
        orient = ("noise ceiling (one reference seed ranks the other)" if r["proxy"] == SEED_AGREEMENT else
                  "lower is better (sign-corrected)" if r["sign_corrected"] else "higher is better")
        meets = "(ceiling)" if r["proxy"] == SEED_AGREEMENT else verdict(r["tau_lo"], target)
        lines.append(f"| {r['proxy']} | {orient} | {interval(r)} | {ceiling} | {interval(r, 'rho')} | {meets} |")
    return lines + [""]


def _arch_table(df: pd.DataFrame) -> list[str]:
    """Every architecture's scores, one row each."""
    seed_cols = sorted(c for c in df.columns if c.startswith("reference_accuracy_seed"))
    seed_cols += sorted(c for c in df.columns if c.startswith("scaled"))
    cols = [c for c in ["arch_id", "family", "reference_accuracy", *seed_cols, "reference_loss", "short_accuracy",
                        "short_test_loss", "train_loss_sum", *ZERO_COST,
                        "params", "flops", "summary", "error"] if c in df]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = [("" if math.isnan(r[c]) else f"{r[c]:.4g}") if isinstance(r[c], float) else str(r[c]).replace("|", "/")
                 for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
