"""`nas confirm`: the front again, with more seeds and one paired timing (nas/engine/confirm.py)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from evaluators.confirmation import ConfirmConfig
from nas.cli.base import StorageOpt, StudyOpt, TrustCodeOpt, app, out, user_errors
from nas.cli.options import checked_option
from search_spaces.schema import check_of


def confirmed_table(df, numbers) -> Table:
    """The confirmed candidates: each objective's confirmed value with its spread (``± std (n)``
    for a quality metric, ``[low, high]`` for a timed one) and the search's first value, and the
    latency ratio to the fastest candidate with its interval."""
    objectives = df.attrs["objectives"]
    rows = df[df["number"].isin(list(numbers))].sort_values("number")
    t = Table(title=f"confirmed ({len(rows)} candidates)")
    t.add_column("trial", justify="right")
    for o in objectives:
        t.add_column(f"{o} {'↑' if objectives[o] == 'maximize' else '↓'}", justify="right")
        t.add_column("first", justify="right")
    t.add_column("latency ratio", justify="right")
    for _, r in rows.iterrows():
        cells = [str(int(r["number"]))]
        for o in objectives:
            cells += [_spread(r, o), _num(r.get(f"{o}_first"))]
        cells.append(_interval(r, "latency_ratio", "latency_ratio_ci"))
        t.add_row(*cells)
    return t


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) and v == v else ""


def _spread(r, m: str) -> str:
    """``m``'s value with its spread: ``0.51 ± 0.03 (3)`` or ``1.2 [1.1, 1.4]``."""
    if r.get(f"{m}_n") == r.get(f"{m}_n") and r.get(f"{m}_n") is not None:
        std = r.get(f"{m}_std")
        return f"{_num(r[m])} ± {_num(std) or '?'} ({int(r[f'{m}_n'])})"
    base, at, profile = m.partition("@")
    return _interval(r, m, f"{base.replace('_ms', '_ci')}{at}{profile}")


def _interval(r, m: str, ci: str) -> str:
    """``m``'s value and the interval whose ends are the columns ``<ci>_low`` and ``<ci>_high``."""
    base, at, profile = ci.partition("@")
    lo, hi = r.get(f"{base}_low{at}{profile}"), r.get(f"{base}_high{at}{profile}")
    if lo is None or lo != lo:
        return _num(r.get(m))
    return f"{_num(r.get(m))} [{_num(lo)}, {_num(hi)}]"


@app.command()
@user_errors
def confirm(
    study: str = StudyOpt,
    storage: Optional[str] = StorageOpt,
    seeds: Optional[int] = checked_option(None, "--seeds", check=check_of(ConfirmConfig, "seeds"),
                                          help="seeds per candidate in all, the search's own included (default: "
                                               "the space's confirm.seeds, 3)"),
    rounds: Optional[int] = checked_option(None, "--rounds", check=check_of(ConfirmConfig, "rounds"),
                                           help="interleaved rounds of the paired timing (default: the space's "
                                                "confirm.rounds)"),
    new_pass: bool = typer.Option(False, "--new-pass", help="confirm again, independently: new seeds and a new "
                                                            "timing, whose values replace the last pass's"),
    trust_code: bool = TrustCodeOpt,
):
    """Re-evaluate the front and every trial that could join it: more seeds, one paired timing."""
    from nas.api import confirm as run_confirm
    from nas.cli.search import progress_for

    df = run_confirm(study, storage=storage, seeds=seeds, rounds=rounds, new_pass=new_pass, trust_code=trust_code,
                     progress=progress_for)
    report = df.attrs["confirmation"]
    if report["candidates"]:
        out.print(confirmed_table(df, report["candidates"]))
    out.print(report["line"], highlight=False, markup=False, soft_wrap=True)
