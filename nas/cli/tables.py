"""Tables the commands print: the Pareto front, and a model's parameters per block."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

UNRESOLVED_SHOWN = 4  # trial numbers listed in the table's "unresolved with" cell; then "+k"
P_FRONT_NOTE = ("p_front: the chance the trial is on the front under its measured uncertainty; unresolved with: "
                "trials that could dominate it within their 95% intervals")


def front_counts(df, front) -> str:
    """'3 of 7 complete trials', and how many complete trials violate a constraint or do not beat
    a floor when any do."""
    from nas.results.floors import floor_text, floors_of
    from nas.results.trials import excluded_counts, feasible_complete

    infeasible, floored = excluded_counts(df)
    text = f"{len(front)} of {len(feasible_complete(df))} {'feasible ' if infeasible else ''}complete trials"
    if infeasible:
        text += f"; {infeasible} violate a constraint"
    if floored:
        text += f"; {floored} below a floor ({floor_text(floors_of(df))})"
    return text


def confirmed_note(df):
    """A line saying how many trials hold confirmed values (``nas confirm``), which every count,
    front and best value then uses; None when none does."""
    from nas.results.uncertainty import confirmed_mask

    n = int(confirmed_mask(df).sum())
    if not n:
        return None
    return (f"{n} trial{'s' if n > 1 else ''} confirmed (nas confirm): their metrics are the confirmed values, "
            "the first ones kept as <metric>_first")


def _unresolved_cell(numbers) -> str:
    numbers = list(numbers) if isinstance(numbers, (list, tuple)) else []
    shown = " ".join(f"#{n}" for n in numbers[:UNRESOLVED_SHOWN])
    return shown + (f" +{len(numbers) - UNRESOLVED_SHOWN}" if len(numbers) > UNRESOLVED_SHOWN else "")


def front_table(df, title="Pareto front") -> Table:
    """The front of ``df``: each member's objectives, p_front, the trials it is unresolved with
    (marked), confirmed or not (when any trial is), parameters and architecture."""
    from nas.results.trials import pareto_front
    from nas.results.uncertainty import confirmed_mask

    front = pareto_front(df)
    objs = list(df.attrs["objectives"])
    confirmed = confirmed_note(df) is not None
    t = Table(title=f"{title} ({front_counts(df, front)})", caption=P_FRONT_NOTE)
    t.add_column("trial", justify="right")
    for o in objs:
        arrow = "↑" if df.attrs["objectives"][o] == "maximize" else "↓"
        t.add_column(f"{o} {arrow}", justify="right")
    t.add_column("p_front", justify="right")
    t.add_column("unresolved with", overflow="fold")
    extra = ("arch_id", "architecture") if "params" in objs else ("params", "arch_id", "architecture")
    for col in (("confirmed",) if confirmed else ()) + extra:  # params once, also when it is an objective
        t.add_column(col, justify="right" if col == "params" else "left", overflow="fold")
    for (_, r), sure in zip(front.iterrows(), confirmed_mask(front)):
        cells = [str(int(r["number"]))] + [f"{r[o]:.4g}" for o in objs]
        cells += [f"{r['p_front']:.2f}", _unresolved_cell(r["unresolved_with"])]
        if confirmed:
            cells.append("yes" if sure else "")
        if "params" not in objs:
            cells.append(f"{int(r['params']):,}" if "params" in r and r["params"] == r["params"] else "")
        cells += [str(r.get("arch_id", "")),
                  escape((f"[{r['baseline']}] " if isinstance(r.get("baseline"), str) else "") + str(r.get("summary", "")))]
        t.add_row(*cells)
    return t


def goal_lines(trial, objectives: dict, space_yaml: str) -> list[str]:
    """`nas show`'s lines for ``trial`` (an Optuna FrozenTrial) of a study with ``objectives``
    ({metric: direction}) and the stored space text ``space_yaml``: the objectives, the constraints
    with their limits (met or violated by the trial), then every metric the trial stored
    (``metric@profile``, a plugin's too), objectives first. Read from the study alone: no plugin."""
    import yaml

    from nas.store.trial_attrs import metrics_of

    values = dict(zip(objectives, trial.values or ()))
    metrics = {**values, **{k: v for k, v in metrics_of(trial).items() if k not in values}}
    lines = ["objectives: " + ", ".join(f"{k} ({d})" for k, d in objectives.items())]
    constraints = (yaml.safe_load(space_yaml) or {}).get("constraints") or {}
    if constraints:
        lines.append("constraints: " + ", ".join(_constraint_text(name, bound, limit, metrics.get(name))
                                                 for name, bounds in constraints.items()
                                                 for bound, limit in bounds.items()))
    shown = {k: v for k, v in metrics.items() if v is not None}
    if shown:
        lines.append("metrics: " + ", ".join(f"{k}={_number(v):.4g}" if _number(v) is not None else f"{k}={v}"
                                             for k, v in shown.items()))
    return lines


def _number(v):
    """``v`` as a float if it is a number (or a number's text, as YAML may give a limit), else None."""
    if isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _constraint_text(name: str, bound: str, limit, value) -> str:
    """'params <= 1e+06 (met)': a constraint's bound (max or min), and whether ``value`` meets it."""
    op, lim, v = "<=" if bound == "max" else ">=", _number(limit), _number(value)
    text = f"{name} {op} {lim:g}" if lim is not None else f"{name} {op} {limit}"
    if lim is None or v is None:
        return text
    return text + (" (met)" if (v <= lim if bound == "max" else v >= lim) else " (violated)")


def model_summary(arch, io) -> Table:
    """The model of ``arch`` built for a task's I/O ``io``: parameters per block, then the rest."""
    from search_spaces import build_model

    model = build_model(arch, io)
    t = Table(title=f"model summary: {escape(arch.summary())}")
    for col in ("stage", "block", "width", "mixer", "ffn", "params"):
        t.add_column(col, justify="right" if col in ("params", "width") else "left")
    for si, (stage, blocks) in enumerate(zip(arch.stages, model.stages)):
        for bi, (spec, block) in enumerate(zip(stage.blocks, blocks)):
            n = sum(p.numel() for p in block.parameters())
            mixer = spec.mixer.type + (f"({', '.join(f'{k}={v}' for k, v in spec.mixer.params.items())})" if spec.mixer.params else "")
            ffn = "none" if spec.ffn.type == "none" else f"{spec.ffn.type} x{spec.ffn.ratio:g}"
            t.add_row(str(si), str(bi), str(stage.dim), mixer, ffn, f"{n:,}")
    total = sum(p.numel() for p in model.parameters())
    t.add_row("", "", "", "stem + head + norms", "", f"{total - sum(p.numel() for s in model.stages for p in s.parameters()):,}")
    t.add_row("", "", "", "[bold]total[/]", "", f"[bold]{total:,}[/]")
    return t
