"""Plots of a study: every trial on two objectives, the Pareto front as a step line, baselines as
stars; PNG/SVG through matplotlib (Agg), interactive HTML through plotly (self-contained).

With three or more objectives and no axes chosen, one panel per pair of objectives. In each panel
the step line is the front of that pair; trials on the front of *all* objectives get a black ring.
Fronts count only trials that satisfy the space's constraints and beat its floors; complete trials
that violate one or fall below a floor are hollow grey circles ("violates a constraint", "below a
floor"), never on a front. Failed and pruned trials are grey x markers where their metrics are
known, and listed in a note under the figure where they are not. Complete trials carry grey 95%
error bars where their values are uncertain (``nas.results.error_bars``); the front's labels and the
hover text give each trial's p_front.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from nas.errors import UserError
from nas.results.error_bars import mpl_error_bars, plotly_errors, with_uncertainty
from nas.results.floors import beats, floor_text, floors_of
from nas.results.trials import CONSTRAINT_PREFIX, excluded_counts, feasible_complete, pareto_mask

__all__ = ["axes_pairs", "direction", "front_figure", "hypervolume_figure", "compare_figure",
           "write_figure", "front_html", "compare_html", "failed_note", "staircase"]

FAILED_STATES = ("FAIL", "PRUNED")
INFEASIBLE_LABEL = "violates a constraint"
FLOORED_LABEL = "below a floor"
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f"]


# ------------------------------------------------------------------------------------ data
def direction(df: pd.DataFrame, col: str) -> str:
    """The objective's direction, or the metric's natural one (accuracy up, costs down)."""
    objs = df.attrs.get("objectives") or {}
    if col in objs:
        return objs[col]
    from evaluators.evaluation import METRICS

    return METRICS.get(col, "minimize")


def _check_col(df: pd.DataFrame, col: str, what: str):
    if col not in df.columns:
        numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not c.startswith("arch.s")]
        raise UserError(f"{what}: no column {col!r} in study {df.attrs.get('study', '')!r}; "
                        f"numeric columns: {', '.join(numeric)}")


def axes_pairs(df: pd.DataFrame, x: Optional[str] = None, y: Optional[str] = None) -> list[tuple[str, str]]:
    """The (x, y) panels to draw: the given pair, else the study's first two objectives, or every
    pair of objectives when there are three or more."""
    objs = list(df.attrs.get("objectives") or {})
    if (x is None) != (y is None):
        given = x or y
        others = [o for o in objs if o != given]
        if not others:
            raise UserError("give both --x and --y")
        x, y = (x, others[0]) if x else (others[0], y)
    if x is not None:
        _check_col(df, x, "--x")
        _check_col(df, y, "--y")
        return [(x, y)]
    if len(objs) < 2:
        raise UserError(f"study has {len(objs)} objective(s); choose the axes with --x and --y")
    return list(itertools.combinations(objs, 2))


def _values(df: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    return df[list(cols)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)


def _front2d(done: pd.DataFrame, x: str, y: str, df: pd.DataFrame) -> pd.DataFrame:
    done = done.dropna(subset=[x, y])
    if done.empty:
        return done
    front = done[pareto_mask(_values(done, [x, y]), [direction(df, x), direction(df, y)])]
    return front.sort_values([x, y])


def staircase(front: pd.DataFrame, x: str, y: str, df: pd.DataFrame):
    """Vertices of the attainment line through the 2-D front: between neighbours, the corner
    that both weakly dominate."""
    if front.empty:
        return [], []
    sx = -1.0 if direction(df, x) == "maximize" else 1.0
    sy = -1.0 if direction(df, y) == "maximize" else 1.0
    pts = sorted(zip(_values(front, [x])[:, 0] * sx, _values(front, [y])[:, 0] * sy))  # minimize both
    xs, ys = [pts[0][0]], [pts[0][1]]
    for (_, y0), (x1, y1) in zip(pts, pts[1:]):
        xs += [x1, x1]
        ys += [y0, y1]
    return [v * sx for v in xs], [v * sy for v in ys]


def _full_front_numbers(df: pd.DataFrame) -> set:
    from nas.results.trials import pareto_front

    if not df.attrs.get("objectives"):
        return set()
    return set(pareto_front(df)["number"].tolist())


def _split(df: pd.DataFrame):
    """(complete, feasible and above the floors; complete but violating a constraint or below a
    floor; failed or pruned) rows."""
    done = feasible_complete(df)
    complete = df[df["state"] == "COMPLETE"]
    return done, complete.drop(index=done.index), df[df["state"].isin(FAILED_STATES)]


def _excluded_label(df: pd.DataFrame) -> str:
    """The legend entry of the hollow grey circles: what kept those complete trials off the front."""
    infeasible, floored = excluded_counts(df)
    return " or ".join([INFEASIBLE_LABEL] * bool(infeasible or not floored) + [FLOORED_LABEL] * bool(floored))


def _is_baseline(df: pd.DataFrame) -> pd.Series:
    if "baseline" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["baseline"].notna() & (df["baseline"].astype(str) != "")


@dataclass(frozen=True)
class _Panel:
    """What the panel of one pair of objectives shows (the same in the static and interactive plots)."""

    x: str
    y: str
    done: pd.DataFrame  # complete feasible trials with both values
    normal: pd.DataFrame  # of those, the ones that are not baselines
    baselines: pd.DataFrame
    front: pd.DataFrame  # the front of this pair
    stairs: tuple  # (xs, ys) of its step line
    failed: pd.DataFrame  # failed or pruned trials whose values are known
    infeasible: pd.DataFrame  # complete trials that violate a constraint or do not beat a floor
    excluded_label: str = INFEASIBLE_LABEL  # what the infeasible rows are called in the legend


def _panels(df: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> list[_Panel]:
    done, infeasible, bad = _split(df)
    base = _is_baseline(df)
    label = _excluded_label(df)
    panels = []
    for x, y in pairs:
        d = done.dropna(subset=[x, y])
        front = _front2d(d, x, y, df)
        panels.append(_Panel(x, y, d, d[~base.loc[d.index]], d[base.loc[d.index]], front, staircase(front, x, y, df),
                             bad.dropna(subset=[x, y]) if len(bad) else bad, infeasible.dropna(subset=[x, y]), label))
    return panels


def _colors(df: pd.DataFrame, color: Optional[str]):
    """(kind, mapping): ("cat", {value: hex}) or ("num", (vmin, vmax)) or (None, None)."""
    if not color:
        return None, None
    _check_col(df, color, "--color")
    col = df[color]
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col) and col.nunique() > 8:
        v = pd.to_numeric(col, errors="coerce")
        return "num", (float(v.min()), float(v.max()))
    values = sorted({str(v) for v in col if v is not None and v == v})
    return "cat", {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(values)}


def failed_note(df: pd.DataFrame, pairs: Sequence[tuple[str, str]], limit: int = 6) -> str:
    """One line naming the failed/pruned trials that have no point on the plot, and why."""
    bad = df[df["state"].isin(FAILED_STATES)]
    cols = sorted({c for p in pairs for c in p})
    missing = bad[bad[cols].isna().any(axis=1)] if len(bad) else bad
    running = int((~df["state"].isin(FAILED_STATES + ("COMPLETE",))).sum())
    parts = []
    for _, r in missing.head(limit).iterrows():
        err = r.get("error")
        err = err.strip() if isinstance(err, str) else ""  # NaN/None: no reason stored
        err = (err[:60] + "...") if len(err) > 63 else err
        parts.append(f"#{int(r['number'])} {r['state'].lower()}" + (f" ({err})" if err else ""))
    if len(missing) > limit:
        parts.append(f"and {len(missing) - limit} more")
    note = ""
    if parts:
        note = f"not plotted ({len(missing)} without metrics): " + "; ".join(parts)
    if running:
        note += ("; " if note else "") + f"{running} trial(s) still running or waiting"
    return note


def _hv_text(df, pairs) -> str:
    objs = list(df.attrs.get("objectives") or {})
    if not objs:
        return ""
    from nas.results.volume import hypervolume

    try:
        return f", hypervolume {hypervolume(df):.4g}"
    except ValueError:
        return ""


def _title(df, pairs) -> str:
    n = int((df["state"] == "COMPLETE").sum())
    infeasible, floored = excluded_counts(df)
    front = _full_front_numbers(df)
    return (f"study {df.attrs.get('study', '')}: {n} complete trials"
            + (f" ({infeasible} violating a constraint)" if infeasible else "")
            + (f" ({floored} below a floor)" if floored else "")
            + f", front of {len(front)}{_hv_text(df, pairs)}")


def _label(df, col):
    arrow = {"maximize": " (higher is better)", "minimize": " (lower is better)"}[direction(df, col)]
    return col + arrow


# ------------------------------------------------------------------------------ matplotlib
def _grid(n):
    cols = min(n, 3)
    return math.ceil(n / cols), cols


def front_figure(df: pd.DataFrame, pairs: Sequence[tuple[str, str]], color: Optional[str] = "arch.family",
                 title: Optional[str] = None, panel_size=(6.0, 4.6)):
    """A matplotlib Figure of the study (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = _grid(len(pairs))
    fig, axes = plt.subplots(rows, cols, figsize=(panel_size[0] * cols, panel_size[1] * rows + 0.5), squeeze=False)
    kind, cmap = _colors(df, color)
    df = with_uncertainty(df, [c for p in pairs for c in p])
    full = _full_front_numbers(df)
    handles = {}  # legend label -> artist, in the order first drawn
    for k, (ax, p) in enumerate(zip(axes.flat, _panels(df, pairs))):
        sc = _mpl_points(ax, p, kind, cmap, color, handles)
        mpl_error_bars(ax, p.done, p.x, p.y, handles)
        if kind == "num" and k == len(pairs) - 1:
            fig.colorbar(sc, ax=axes.ravel().tolist(), label=color, shrink=0.8)
        _mpl_front(ax, p, full, len(pairs) == 1, handles)
        _mpl_marked(ax, p, kind, cmap, color, handles)
        ax.set_xlabel(_label(df, p.x))
        ax.set_ylabel(_label(df, p.y))
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    if handles:
        axes.flat[0].legend(list(handles.values()), list(handles), fontsize=8, loc="best", framealpha=0.85)
    fig.suptitle(title if title is not None else _title(df, pairs), fontsize=11)
    note = failed_note(df, pairs)
    if note:
        fig.text(0.01, 0.01, note, fontsize=8, color="#555555", wrap=True)
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 0.97))
    return fig


def _mpl_points(ax, p: _Panel, kind: str, cmap, color: Optional[str], handles: dict):
    """The complete trials that are not baselines, coloured by ``color``; returns the scatter of a
    numeric colouring (for its colour bar)."""
    x, y, normal = p.x, p.y, p.normal
    if kind == "num":
        return ax.scatter(normal[x], normal[y], s=36, c=pd.to_numeric(normal[color], errors="coerce"),
                          cmap="viridis", vmin=cmap[0], vmax=cmap[1], zorder=3)
    if kind != "cat":
        handles.setdefault("complete", ax.scatter(normal[x], normal[y], s=36, color=PALETTE[0], label="complete",
                                                  zorder=3))
        return None
    for val, c in cmap.items():
        sub = normal[normal[color].astype(str) == val]
        if len(sub):
            h = ax.scatter(sub[x], sub[y], s=36, color=c, alpha=0.85, label=f"{color} = {val}", zorder=3)
            handles.setdefault(f"{color} = {val}", h)
    for val, c in cmap.items():  # a family seen only among the baselines still gets its legend entry
        if f"{color} = {val}" not in handles and (p.done[color].astype(str) == val).any():
            handles[f"{color} = {val}"] = ax.scatter([], [], s=36, color=c)
    rest = normal[normal[color].isna()]
    if len(rest):
        ax.scatter(rest[x], rest[y], s=36, color="#999999", zorder=3)
    return None


def _mpl_front(ax, p: _Panel, full, single: bool, handles: dict) -> None:
    """Rings on the trials of the front of all objectives (with several panels), the step line of
    this pair's front, and trial numbers on it (with one panel)."""
    x, y = p.x, p.y
    ring = p.done[p.done["number"].isin(full)]
    if len(ring) and not single:
        h = ax.scatter(ring[x], ring[y], s=110, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4,
                       label="on the front (all objectives)")
        handles.setdefault("on the front (all objectives)", h)
    sx, sy = p.stairs
    if not sx:
        return
    lbl = "Pareto front" if single else "front of this pair"
    (h,) = ax.plot(sx, sy, color="black", lw=1.3, ls="-", zorder=2, label=lbl)
    handles.setdefault(lbl, h)
    if single:
        for _, r in p.front.iterrows():
            sure = r.get("p_front", 1.0) >= 0.995  # p_front under 1 is written beside the number
            ax.annotate(f"#{int(r['number'])}" + ("" if sure else f" p={r['p_front']:.2f}"), (r[x], r[y]),
                        textcoords="offset points", xytext=(5, 5), fontsize=8, color="#333333", zorder=6)


def _mpl_marked(ax, p: _Panel, kind: str, cmap, color: Optional[str], handles: dict) -> None:
    """Baselines (named stars), failed or pruned trials (x) and trials violating a constraint (hollow)."""
    x, y, bl = p.x, p.y, p.baselines
    if len(bl):
        bc = [cmap.get(str(v), "#999999") for v in bl[color]] if kind == "cat" else "gold"
        h = ax.scatter(bl[x], bl[y], marker="*", s=240, c=bc, edgecolors="black", linewidths=0.8, zorder=5,
                       label="baseline (literature design)")
        handles.setdefault("baseline (literature design)", h)
        for _, r in bl.iterrows():
            ax.annotate(str(r["baseline"]), (r[x], r[y]), textcoords="offset points", xytext=(7, -10),
                        fontsize=8, fontweight="bold", zorder=6)
    if len(p.failed):
        h = ax.scatter(p.failed[x], p.failed[y], marker="x", s=40, color="#888888", zorder=3, label="failed / pruned")
        handles.setdefault("failed / pruned", h)
    if len(p.infeasible):
        h = ax.scatter(p.infeasible[x], p.infeasible[y], marker="o", s=36, facecolors="none", edgecolors="#888888",
                       zorder=3, label=p.excluded_label)
        handles.setdefault(p.excluded_label, h)


def hypervolume_figure(history: pd.DataFrame, title: str = "hypervolume of the front over the search"):
    """Hypervolume of the first k finished trials against k (from nas.hypervolume_history)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    if len(history):
        ax.step(history["k"], history["hypervolume"], where="post", color=PALETTE[0], lw=1.6)
        ax.plot(history["k"], history["hypervolume"], "o", color=PALETTE[0], ms=3)
    ax.set_xlabel("finished trials (in trial order)")
    ax.set_ylabel("hypervolume")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def compare_figure(dfs: dict, pairs: Sequence[tuple[str, str]], hvs: Optional[dict] = None):
    """Several studies on the same axes: points per study, each study's front as a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = _grid(len(pairs))
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 4.6 * rows + 0.5), squeeze=False)
    markers = ["o", "s", "^", "D", "v", "P"]
    for ax, (x, y) in zip(axes.flat, pairs):
        for i, (name, df) in enumerate(dfs.items()):
            c = PALETTE[i % len(PALETTE)]
            d = feasible_complete(df, [x, y])
            lbl = name + (f" (HV {hvs[name]:.4g})" if hvs else "")
            ax.scatter(d[x], d[y], s=30, color=c, marker=markers[i % len(markers)], alpha=0.55, label=lbl, zorder=3)
            sx, sy = staircase(_front2d(d, x, y, df), x, y, df)
            if sx:
                ax.plot(sx, sy, color=c, lw=1.6, zorder=4)
        ax.set_xlabel(_label(next(iter(dfs.values())), x))
        ax.set_ylabel(_label(next(iter(dfs.values())), y))
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8, loc="best")
    fig.suptitle("fronts of " + ", ".join(dfs) + (" (hypervolume against a common reference point)" if hvs else ""),
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def write_figure(fig, path: Path):
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def figure_svg(fig) -> str:
    """The figure as an inline <svg> element (text drawn as paths, so no fonts are needed)."""
    import io

    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    s = buf.getvalue()
    return s[s.index("<svg"):]


# -------------------------------------------------------------------------------- plotly
def _hover(df: pd.DataFrame, x: str, y: str, color: Optional[str]) -> list[str]:
    from html import escape

    out = []
    for _, r in df.iterrows():
        lines = [f"<b>trial {int(r['number'])}</b> {r['state'].lower()}"]
        if "baseline" in r and isinstance(r["baseline"], str) and r["baseline"]:
            lines.append(f"baseline: <b>{escape(r['baseline'])}</b>")
        lines.append(f"{x} = {r[x]:.4g}, {y} = {r[y]:.4g}")
        if color and color in r:
            lines.append(f"{color} = {escape(str(r[color]))}")
        if "params" in r and r["params"] == r["params"] and r["params"] is not None:
            lines.append(f"params = {int(r['params']):,}")
        if r.get("summary"):
            lines.append(escape(str(r["summary"])).replace(" | ", "<br>  "))
        if r.get("arch_id"):
            lines.append(f"arch_id {r['arch_id']}")
        if isinstance(r.get("error"), str) and r["error"]:
            lines.append("error: " + escape(r["error"][:120]))
        for name in df.attrs.get("constraints") or []:
            v = r.get(CONSTRAINT_PREFIX + name)
            if v is not None and v > 0:
                lines.append(f"violates {escape(name)} by {v:.4g}")
        for m, f in floors_of(df).items() if r["state"] == "COMPLETE" else ():
            if not beats(r.get(m, np.nan), f):
                lines.append(f"below the floor {escape(floor_text({m: f}))}")
        if r["state"] == "COMPLETE" and isinstance(r.get("p_front"), float):
            lines.append(f"p_front = {r['p_front']:.2f}")
        out.append("<br>".join(lines))
    return out


def _plotly_fig(pairs, title):
    from plotly.subplots import make_subplots

    rows, cols = _grid(len(pairs))
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.08, vertical_spacing=0.12)
    fig.update_layout(title=title, template="plotly_white", height=520 * rows, width=max(760, 560 * cols),
                      hoverlabel={"align": "left"}, legend={"groupclick": "toggleitem"})
    return fig


def front_html(df: pd.DataFrame, pairs: Sequence[tuple[str, str]], color: Optional[str] = "arch.family",
               full_html: bool = True) -> str:
    """Interactive plot as HTML with plotly's JavaScript inline (works offline)."""
    import plotly.graph_objects as go

    kind, cmap = _colors(df, color)
    df = with_uncertainty(df, [c for p in pairs for c in p])
    fig = _plotly_fig(pairs, _title(df, pairs))
    full = _full_front_numbers(df)
    rows, cols = _grid(len(pairs))
    for k, p in enumerate(_panels(df, pairs)):
        pos = {"row": k // cols + 1, "col": k % cols + 1}
        first = k == 0
        for name, sub, marker in _plotly_groups(p.normal, kind, cmap, color, first):
            if len(sub):
                line = {"width": [1.5 if n in full else 0 for n in sub["number"]], "color": "black"}
                fig.add_trace(go.Scatter(x=sub[p.x], y=sub[p.y], mode="markers", name=name, legendgroup=name,
                                         showlegend=first, marker={**marker, "size": 9, "line": line},
                                         hovertext=_hover(sub, p.x, p.y, color), hoverinfo="text",
                                         **plotly_errors(sub, p.x, p.y)), **pos)
        sx, sy = p.stairs
        if sx:
            fig.add_trace(go.Scatter(x=sx, y=sy, mode="lines", name="Pareto front" if len(pairs) == 1 else "front of the pair",
                                     legendgroup="front", showlegend=first, line={"color": "black", "width": 1.5},
                                     hoverinfo="skip"), **pos)
        _plotly_marked(fig, p, pos, first, color)
        fig.update_xaxes(title_text=_label(df, p.x), **pos)
        fig.update_yaxes(title_text=_label(df, p.y), **pos)
    note = failed_note(df, pairs)
    if note:
        fig.add_annotation(text=note, xref="paper", yref="paper", x=0, y=-0.16 / rows, showarrow=False,
                           font={"size": 11, "color": "#555555"}, xanchor="left")
        fig.update_layout(margin={"b": 110})
    return fig.to_html(include_plotlyjs=True, full_html=full_html)


def _plotly_groups(normal: pd.DataFrame, kind: str, cmap, color: Optional[str], first: bool) -> list:
    """(legend name, rows, marker) per colour group of the complete trials that are not baselines."""
    if kind == "cat":
        return [(f"{color} = {val}", normal[normal[color].astype(str) == val], {"color": c}) for val, c in cmap.items()]
    if kind == "num":
        return [(color, normal, {"color": pd.to_numeric(normal[color], errors="coerce"), "colorscale": "Viridis",
                                 "cmin": cmap[0], "cmax": cmap[1], "showscale": first, "colorbar": {"title": color}})]
    return [("complete", normal, {"color": PALETTE[0]})]


def _plotly_marked(fig, p: _Panel, pos: dict, first: bool, color: Optional[str]) -> None:
    """Baselines (named stars), failed or pruned trials (x) and trials violating a constraint (hollow)."""
    import plotly.graph_objects as go

    marked = [
        (p.baselines, "baseline", "baseline", {"symbol": "star", "size": 16, "color": "gold",
                                               "line": {"width": 1, "color": "black"}}),
        (p.failed, "failed / pruned", "failed", {"symbol": "x", "size": 9, "color": "#888888"}),
        (p.infeasible, p.excluded_label, "infeasible", {"symbol": "circle-open", "size": 9, "color": "#888888"}),
    ]
    for rows, name, group, marker in marked:
        if not len(rows):
            continue
        named = {"mode": "markers+text", "text": rows["baseline"], "textposition": "bottom right"} \
            if group == "baseline" else {"mode": "markers"}
        bars = plotly_errors(rows, p.x, p.y) if group == "baseline" else {}
        fig.add_trace(go.Scatter(x=rows[p.x], y=rows[p.y], name=name, legendgroup=group, showlegend=first,
                                 marker=marker, hovertext=_hover(rows, p.x, p.y, color), hoverinfo="text", **named,
                                 **bars), **pos)


def compare_html(dfs: dict, pairs: Sequence[tuple[str, str]], hvs: Optional[dict] = None) -> str:
    import plotly.graph_objects as go

    fig = _plotly_fig(pairs, "fronts of " + ", ".join(dfs))
    rows, cols = _grid(len(pairs))
    for k, (x, y) in enumerate(pairs):
        pos = {"row": k // cols + 1, "col": k % cols + 1}
        for i, (name, df) in enumerate(dfs.items()):
            c = PALETTE[i % len(PALETTE)]
            d = feasible_complete(df, [x, y])
            lbl = name + (f" (HV {hvs[name]:.4g})" if hvs else "")
            fig.add_trace(go.Scatter(x=d[x], y=d[y], mode="markers", name=lbl, legendgroup=name, showlegend=k == 0,
                                     marker={"color": c, "size": 8, "opacity": 0.6},
                                     hovertext=_hover(d, x, y, None), hoverinfo="text"), **pos)
            sx, sy = staircase(_front2d(d, x, y, df), x, y, df)
            if sx:
                fig.add_trace(go.Scatter(x=sx, y=sy, mode="lines", name=f"{name} front", legendgroup=name,
                                         showlegend=False, line={"color": c, "width": 2}, hoverinfo="skip"), **pos)
        first = next(iter(dfs.values()))
        fig.update_xaxes(title_text=_label(first, x), **pos)
        fig.update_yaxes(title_text=_label(first, y), **pos)
    return fig.to_html(include_plotlyjs=True, full_html=True)
