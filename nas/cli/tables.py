"""Tables the commands print: the Pareto front, and a model's parameters per block."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table


def front_counts(df, front) -> str:
    """'3 of 7 complete trials', and how many of those violate a constraint when any do."""
    from nas.results.trials import feasible_complete

    complete = int((df["state"] == "COMPLETE").sum())
    infeasible = complete - len(feasible_complete(df))
    if not infeasible:
        return f"{len(front)} of {complete} complete trials"
    return f"{len(front)} of {complete - infeasible} feasible complete trials; {infeasible} violate a constraint"


def front_table(df, title="Pareto front") -> Table:
    from nas.results.trials import pareto_front

    front = pareto_front(df)
    objs = list(df.attrs["objectives"])
    t = Table(title=f"{title} ({front_counts(df, front)})")
    t.add_column("trial", justify="right")
    for o in objs:
        arrow = "↑" if df.attrs["objectives"][o] == "maximize" else "↓"
        t.add_column(f"{o} {arrow}", justify="right")
    extra = ("arch_id", "architecture") if "params" in objs else ("params", "arch_id", "architecture")
    for col in extra:  # params once, also when it is an objective
        t.add_column(col, justify="right" if col == "params" else "left", overflow="fold")
    for _, r in front.iterrows():
        cells = [str(int(r["number"]))] + [f"{r[o]:.4g}" for o in objs]
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
