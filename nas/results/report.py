"""`nas report`: one self-contained HTML file (figures and diagrams inline, no scripts, no network)
and a markdown twin that links the same figures written beside it as files.

Sections: the search config, trials by state, the hypervolume of the front against the number of
finished trials, the front plot (with 95% error bars), the front as a table (with each member's
p_front and the trials its place is unresolved with), one layer diagram per front architecture
(an SVG generated here: stage by stage, a box per layer coloured by mixer family, height by width),
failed trials with their reasons, and the environment the latencies were measured in.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Optional

import pandas as pd

__all__ = ["write_report", "arch_svg"]

FAMILY_COLORS = {
    "attention": "#cfe2ff", "linear": "#d1f0e0", "local": "#e7dcf7", "hyena": "#ffe0b8",
    "spectral": "#fff3b0", "conv": "#d9d9d9", "mlp": "#f8d7da",
}
MIXER_KEYS = ("heads", "kv_heads", "q_heads", "window", "order", "filter_dim", "ratio", "kernel_size", "topk")


# ----------------------------------------------------------------------------- layer diagram
def _mixer_lines(block) -> list[str]:
    from search_spaces import get_mixer_info, list_mixers

    m = block.mixer
    params = {**(get_mixer_info(m.type).defaults() if m.type in list_mixers() else {}), **m.params}
    shown = [f"{'h' if k == 'heads' else k}={params[k]:g}" if isinstance(params[k], float) else
             f"{'h' if k == 'heads' else k}={params[k]}" for k in MIXER_KEYS if k in params]
    # two short lines of parameters at most
    lines, cur = [], ""
    for s in shown:
        if len(cur) + len(s) + 1 > 16 and cur:
            lines.append(cur)
            cur = s
        else:
            cur = f"{cur} {s}".strip()
    if cur:
        lines.append(cur)
    return lines[:2]


def arch_svg(arch, title: str = "") -> str:
    """A compact left-to-right diagram of an ArchSpec as an inline <svg> element: the stem, then
    each stage (width, downsampling) with one box per layer (mixer, its key parameters, the FFN);
    box colour = mixer family, box height grows with the stage's width."""
    bw, gap, pad = 112, 8, 10
    maxdim = max(s.dim for s in arch.stages)
    top = 46 if title else 26
    hmax = 112
    x = pad
    parts = []
    stem = arch.stem
    stem_txt = stem.type if stem.type == "embed" else f"{stem.type} p={stem.patch}" + (
        f" s={stem.stride}" if stem.stride else "")
    sh = hmax * 0.75
    sy = top + 18 + (hmax - sh) / 2
    parts.append(f'<rect x="{x}" y="{sy:.0f}" width="80" height="{sh:.0f}" rx="6" fill="#f4f4f4" stroke="#888"/>'
                 f'<text x="{x + 40}" y="{sy + sh / 2 - 4:.0f}" class="c b">stem</text>'
                 f'<text x="{x + 40}" y="{sy + sh / 2 + 11:.0f}" class="c s">{escape(stem_txt)}</text>')
    x += 80 + gap
    for si, stage in enumerate(arch.stages):
        n = len(stage.blocks)
        sw = n * bw + (n - 1) * gap + 2 * 6
        head = f"stage {si} · width {stage.dim}" + ("" if stage.downsample == "none" else f" · {stage.downsample} ↓2")
        parts.append(f'<rect x="{x}" y="{top}" width="{sw}" height="{hmax + 26}" rx="8" fill="none" stroke="#bbb" stroke-dasharray="4 3"/>'
                     f'<text x="{x + 8}" y="{top + 13}" class="s b">{escape(head)}</text>')
        h = 52 + (hmax - 52) * stage.dim / maxdim
        for bi, block in enumerate(stage.blocks):
            parts += _block_svg(block, x + 6 + bi * (bw + gap), top + 20 + (hmax - h), bw, h)
        x += sw + gap
    parts.append(f'<rect x="{x}" y="{sy:.0f}" width="62" height="{sh:.0f}" rx="6" fill="#f4f4f4" stroke="#888"/>'
                 f'<text x="{x + 31}" y="{sy + sh / 2 + 4:.0f}" class="c b">head</text>')
    width = max(x + 62 + pad, pad + int(6.6 * len(title)) + pad)
    height = top + hmax + 34
    t = f'<text x="{pad}" y="18" class="b">{escape(title)}</text>' if title else ""
    style = ("<style>text{font:12px sans-serif;fill:#222}.b{font-weight:bold}.s{font-size:11px}"
             ".c{text-anchor:middle}</style>")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img">{style}{t}{"".join(parts)}</svg>')


def _block_svg(block, bx: float, by: float, bw: float, h: float) -> list[str]:
    """One layer's box at (bx, by), ``bw`` by ``h``: the mixer, its key parameters, the FFN below a line."""
    from search_spaces import get_mixer_info, list_mixers

    fam = get_mixer_info(block.mixer.type).family if block.mixer.type in list_mixers() else "?"
    ffn = "no FFN" if block.ffn.type == "none" else f"{block.ffn.type} ×{block.ffn.ratio:g}"
    parts = [f'<rect x="{bx}" y="{by:.0f}" width="{bw}" height="{h:.0f}" rx="6" '
             f'fill="{FAMILY_COLORS.get(fam, "#eeeeee")}" stroke="#555"/>']
    ty = by + 16
    parts.append(f'<text x="{bx + bw / 2}" y="{ty:.0f}" class="c b">{escape(block.mixer.type)}</text>')
    for ln in _mixer_lines(block):
        ty += 13
        parts.append(f'<text x="{bx + bw / 2}" y="{ty:.0f}" class="c s">{escape(ln)}</text>')
    parts.append(f'<line x1="{bx + 6}" x2="{bx + bw - 6}" y1="{by + h - 20:.0f}" y2="{by + h - 20:.0f}" stroke="#999"/>'
                 f'<text x="{bx + bw / 2}" y="{by + h - 7:.0f}" class="c s">{escape(ffn)}</text>')
    return parts


def _legend_svg(families) -> str:
    items, x = [], 4
    for fam in families:
        items.append(f'<rect x="{x}" y="3" width="14" height="14" rx="3" fill="{FAMILY_COLORS.get(fam, "#eee")}" stroke="#555"/>'
                     f'<text x="{x + 19}" y="14" style="font:12px sans-serif">{escape(fam)}</text>')
        x += 26 + 8 * len(fam)
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{x}" height="20">{"".join(items)}</svg>'


# ----------------------------------------------------------------------------------- tables
def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _front_columns(df) -> list[str]:
    objs = list(df.attrs.get("objectives") or {})
    extra = [c for c in ("params", "flops", "latency_spread") if c in df.columns and c not in objs]
    return ["number", *objs, "p_front", "unresolved_with", *extra, "baseline", "arch_id", "summary"]


def _front_cell(r, c: str) -> str:
    """One cell of the front table: trial numbers as '#3 #5', p_front with two decimals."""
    if c == "number":
        return _fmt(int(r[c]))
    if c == "unresolved_with":
        return " ".join(f"#{n}" for n in r[c]) if isinstance(r[c], list) else ""
    if c == "p_front":
        return f"{r[c]:.2f}"
    return _fmt(r[c])


P_FRONT_TEXT = ("p_front is the probability that the trial is on the front under its measured uncertainty "
                "(quality over seeds, timings within their intervals; docs/results.md); \"unresolved with\" lists "
                "the trials that could dominate it within their 95% intervals.")


def _html_table(rows: list[list[str]], header: list[str], cls: str = "") -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in header)
    thead = f"<thead><tr>{th}</tr></thead>" if any(header) else ""
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}">{thead}<tbody>{body}</tbody></table>'


def _md_table(rows: list[list[str]], header: list[str]) -> str:
    def cell(s):
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- report
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1320px;color:#222;padding:0 16px}
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;margin-top:30px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
.meta{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}
td.num,table.front td:not(:last-child){font-variant-numeric:tabular-nums;white-space:nowrap}
table.kv td:first-child{font-weight:600;white-space:nowrap}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:10px;font-size:12px;overflow:auto;max-height:360px}
.fig svg{max-width:100%;height:auto}
.archs{display:flex;flex-wrap:wrap;gap:6px 28px}.arch{overflow-x:auto;max-width:100%}
.note{color:#666;font-size:13px}
"""


@dataclass(frozen=True)
class Section:
    """One part of the report, in both of its forms."""

    html: str
    md: str


@dataclass(frozen=True)
class _Trials:
    """What the sections read: the trials, the objectives, the complete (feasible) trials and the
    front among them, how many complete trials broke a constraint, and where figures go."""

    df: pd.DataFrame
    objectives: dict
    done: pd.DataFrame
    front: pd.DataFrame
    n_infeasible: int
    out_dir: Path
    n_floored: int = 0  # feasible complete trials below a floor


def write_report(df: pd.DataFrame, out_dir, environment: Optional[dict] = None,
                 storage: str = "", title: Optional[str] = None) -> dict:
    """Write ``report.html`` (self-contained), ``report.md`` and the figures it links
    (``front.png``, ``hypervolume.png``, ``arch_<trial>.svg``) into ``out_dir``. Returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = _trials(df, out_dir)
    sections = [
        _search_section(trials, dict(df.attrs.get("config") or {}), df.attrs.get("study", ""), storage),
        _progress_section(trials),
        _front_plot_section(trials),
        _front_table_section(trials),
        _diagrams_section(trials),
        _failures_section(df),
        _environment_section(dict(environment or {})),
    ]
    return _write_pages([s for s in sections if s is not None], out_dir,
                        title or f"mixer-nas report: study {df.attrs.get('study', '')}", storage)


def _trials(df: pd.DataFrame, out_dir: Path) -> _Trials:
    from nas.results.trials import excluded_counts, feasible_complete, pareto_front

    objectives = dict(df.attrs.get("objectives") or {})
    done = feasible_complete(df, list(objectives)) if objectives and len(df) else df.iloc[0:0]
    front = pareto_front(df) if len(done) else done
    n_infeasible, n_floored = excluded_counts(df) if len(df) else (0, 0)
    return _Trials(df, objectives, done, front, n_infeasible, out_dir, n_floored)


def _search_section(t: _Trials, cfg: dict, study: str, storage: str) -> Section:
    """The search config, the task and constraints of its space file, trials by state, floors; the file."""
    from nas.results.floors import floor_text, floors_of

    space_yaml = cfg.pop("space_yaml", "")
    rows = [["study", study], ["storage", storage or cfg.get("storage", "")],
            ["space", str(cfg.get("space", ""))],
            ["objectives", ", ".join(f"{k} ({v})" for k, v in t.objectives.items())],
            ["sampler / seed", f"{cfg.get('sampler', '')} / {cfg.get('seed', '')}"],
            ["budget (trials)", str(cfg.get("trials", ""))],
            ["backend / workers", f"{cfg.get('backend', '')} / {cfg.get('workers', '')}"]]
    _add_space_rows(rows, space_yaml)
    counts = t.df["state"].value_counts().to_dict() if len(t.df) else {}
    rows.append(["trials by state", ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())) or "none"])
    if t.n_infeasible:
        feasible = len(t.done) + t.n_floored
        rows.append(["feasible trials", f"{feasible} of {feasible + t.n_infeasible} complete trials satisfy "
                                        "the constraints; only those count for fronts and hypervolume"])
    floors = floors_of(t.df)
    if floors:
        rows.append(["floors", f"{floor_text(floors)}: {t.n_floored} feasible complete trials are below a floor "
                               "and do not count for fronts and hypervolume"])
    html = "<h2>Search</h2>" + _html_table(rows, ["", ""], "kv")
    md = "## Search\n\n" + _md_table(rows, ["key", "value"])
    if space_yaml:
        html += f"<details><summary>search space file</summary><pre>{escape(space_yaml)}</pre></details>"
        md += ("\n\n<details><summary>search space file</summary>\n\n```yaml\n" + space_yaml.rstrip()
               + "\n```\n</details>")
    return Section(html, md)


def _add_space_rows(rows: list, space_yaml: str) -> None:
    """The task (after the space row) and the constraints of the stored space file, if it says."""
    try:
        import yaml

        space = yaml.safe_load(space_yaml) if space_yaml else {}
        if isinstance(space, dict) and space.get("task"):
            task = space["task"] if isinstance(space["task"], dict) else {"name": space["task"]}
            rows.insert(3, ["task", f"{task.get('name')} {json.dumps(task.get('params', {}))}"])
        if isinstance(space, dict) and space.get("constraints"):
            rows.append(["constraints", json.dumps(space["constraints"])])
    except Exception:  # a report never fails on a cosmetic detail
        pass


def _progress_section(t: _Trials) -> Optional[Section]:
    """The hypervolume of the front of the first k trials against k (none before a complete trial)."""
    from nas.results import plots
    from nas.results.volume import hypervolume, hypervolume_history, reference_point

    if not len(t.done):
        return None
    ref = reference_point(t.df)
    hist = hypervolume_history(t.df, reference=ref)
    hv = hypervolume(t.df, reference=ref)
    ref_txt = ", ".join(f"{k} = {v:.4g}" for k, v in ref.items())
    what = "complete trials that satisfy the constraints" if t.n_infeasible else "complete trials"
    note = (f"Hypervolume of the front of the first k {what} (trial order), against the reference point "
            f"{ref_txt}: per objective the worst such value moved by 10% of the range. Final: {hv:.4g}.")
    fig = plots.hypervolume_figure(hist)
    fig.savefig(t.out_dir / "hypervolume.png", dpi=110)
    return Section(f"<h2>Progress</h2><p class='note'>{escape(note)}</p><div class='fig'>{plots.figure_svg(fig)}</div>",
                   f"## Progress\n\n{note}\n\n![hypervolume over trials](hypervolume.png)")


def _front_plot_section(t: _Trials) -> Section:
    """The front plot (one panel per pair of objectives), or why there is none yet."""
    from nas.results import plots

    if not len(t.done):
        none = "No complete trial satisfies the constraints yet." if t.n_infeasible else "No complete trials yet."
        return Section(f"<h2>Pareto front</h2><p>{none}</p>", f"## Pareto front\n\n{none}")
    pairs = plots.axes_pairs(t.df)
    fig = plots.front_figure(t.df, pairs, "arch.family" if "arch.family" in t.df.columns else None,
                             panel_size=(7.5, 4.8) if len(pairs) == 1 else (5.4, 4.2))
    fig.savefig(t.out_dir / "front.png", dpi=110)
    return Section(f"<h2>Pareto front</h2><div class='fig'>{plots.figure_svg(fig)}</div>",
                   "## Pareto front\n\n![front](front.png)")


def _front_table_section(t: _Trials) -> Optional[Section]:
    """The front as a table: objectives (with their direction), costs, baseline, architecture."""
    front = t.front
    if not len(front):
        return None
    cols = [c for c in _front_columns(t.df) if c in front.columns]
    if "baseline" in cols and not front["baseline"].notna().any():
        cols.remove("baseline")
    arrows = {k: (" ↑" if v == "maximize" else " ↓") for k, v in t.objectives.items()}
    names = {"number": "trial", "summary": "architecture", "unresolved_with": "unresolved with"}
    header = [names.get(c, c + arrows.get(c, "")) for c in cols]
    rows = [[_front_cell(r, c) for c in cols] for _, r in front.iterrows()]
    pool = f"{len(t.done)} {'feasible ' if t.n_infeasible else ''}complete trials"
    note = P_FRONT_TEXT + _confirmed_text(t.df)
    return Section(f"<p>{len(front)} of {pool} are on the front (sorted by {next(iter(t.objectives))}).</p>"
                   + _html_table(rows, header, "front") + f"<p class='note'>{escape(note)}</p>",
                   f"{len(front)} of {pool} are on the front.\n\n" + _md_table(rows, header) + f"\n\n{note}")


def _confirmed_text(df: pd.DataFrame) -> str:
    """' 4 trials hold confirmed values (nas confirm) ...' when any does."""
    from nas.results.uncertainty import confirmed_mask

    n = int(confirmed_mask(df).sum())
    return f" {n} trial(s) hold confirmed values (nas confirm), which every number here uses." if n else ""


def _diagrams_section(t: _Trials) -> Optional[Section]:
    """One layer diagram per front architecture (also written as ``arch_<trial>.svg``), with a legend."""
    from search_spaces import ArchSpec, get_mixer_info, list_mixers

    if not len(t.front):
        return None
    fams, diagrams, md = set(), [], []
    for _, r in t.front.iterrows():
        if not r.get("arch_json"):
            continue
        arch = ArchSpec.from_json(r["arch_json"])
        fams |= {get_mixer_info(m).family for m in arch.mixer_types() if m in list_mixers()}
        cap = _caption(r, t.objectives)
        svg = arch_svg(arch, cap)
        name = f"arch_{int(r['number'])}.svg"
        (t.out_dir / name).write_text(svg, encoding="utf-8")
        diagrams.append(f"<div class='arch'>{svg}</div>")
        md.append(f"### {cap}\n\n`{arch.summary()}`\n\n![trial {int(r['number'])}]({name})")
    html = ("<h2>Front architectures</h2><p class='note'>Stage by stage, one box per layer: mixer and its key "
            "parameters (h = heads), FFN type × ratio below the line. Box height grows with the stage width; "
            "colour is the mixer family:</p><p>" + _legend_svg(sorted(fams)) + "</p>" + "<div class='archs'>"
            + "".join(diagrams) + "</div>")
    return Section(html, "## Front architectures\n\n" + "\n\n".join(md))


def _caption(r, objectives: dict) -> str:
    """A front trial's caption: number, baseline, objective values, parameters."""
    obj_txt = ", ".join(f"{k} {_fmt(r[k])}" for k in objectives)
    base = f" · baseline {r['baseline']}" if isinstance(r.get("baseline"), str) and r["baseline"] else ""
    params = f" · {_fmt(r['params'])} params" if "params" in r and r["params"] == r["params"] else ""
    return f"trial {int(r['number'])}{base}: {obj_txt}{params}"


def _failures_section(df: pd.DataFrame) -> Optional[Section]:
    """Failed and pruned trials with their reasons."""
    bad = df[df["state"].isin(("FAIL", "PRUNED"))] if len(df) else df
    if not len(bad):
        return None
    rows = [[str(int(r["number"])), r["state"].lower(), _fmt(r.get("error")), _fmt(r.get("summary"))]
            for _, r in bad.iterrows()]
    header = ["trial", "state", "reason", "architecture"]
    return Section("<h2>Failed and pruned trials</h2>" + _html_table(rows, header),
                   "## Failed and pruned trials\n\n" + _md_table(rows, header))


def _environment_section(env: dict) -> Section:
    """Where the trials were measured (stored with the study) and the versions writing the report."""
    import optuna

    versions = {"mixer-nas": _version(), "optuna": optuna.__version__, "pandas": pd.__version__}
    rows = [[k, str(v)] for k, v in env.items()] + [[f"{k} (report)", v] for k, v in versions.items()]
    return Section("<h2>Environment</h2><p class='note'>Where the trials were measured (stored with the study), and "
                   "the versions that wrote this report.</p>" + _html_table(rows, ["", ""], "kv"),
                   "## Environment\n\n" + _md_table(rows, ["key", "value"]))


def _write_pages(sections: list, out_dir: Path, title: str, storage: str) -> dict:
    """``report.html`` and ``report.md``: a title and the time, then the sections in order."""
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    head = (f"<h1>{escape(title)}</h1><p class='meta'>written {now} by <code>nas report</code>"
            f"{' from ' + escape(storage) if storage else ''}</p>")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{head}{''.join(s.html for s in sections)}</body></html>")
    paths = {"html": out_dir / "report.html", "md": out_dir / "report.md"}
    paths["html"].write_text(page, encoding="utf-8")
    paths["md"].write_text(f"# {title}\n\nwritten {now} by `nas report`\n\n" + "\n\n".join(s.md for s in sections)
                           + "\n", encoding="utf-8")
    return paths


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("mixer-nas")
    except Exception:
        import nas

        return nas.__version__
