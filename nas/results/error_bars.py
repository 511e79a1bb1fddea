"""What the plots draw of each trial's uncertainty: 95% error bars and p_front.

Bars are the intervals of :mod:`nas.results.uncertainty`: a quality metric's mean +- 1.96 standard
errors (its own seeds, or the study's pooled seed-to-seed spread), a timed metric's stored
interval of the median; an exact metric (params, flops) has none. ``p_front`` is each trial's
probability of being on the front of all objectives.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

__all__ = ["BAR_LABEL", "high_col", "low_col", "mpl_error_bars", "plotly_errors", "with_uncertainty"]

BAR_LABEL = "95% interval"
BAR_COLOR = "#9a9a9a"


def low_col(metric: str) -> str:
    return f"{metric}:low95"


def high_col(metric: str) -> str:
    return f"{metric}:high95"


def with_uncertainty(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """A copy of ``df`` (its attrs kept) with each of ``cols``' 95% interval (``<col>:low95``,
    ``<col>:high95``) and, when it has objectives, ``p_front``."""
    from nas.results.uncertainty import P_FRONT, intervals, p_front

    out = df.copy()
    for c, (lo, hi) in intervals(df, [c for c in dict.fromkeys(cols) if c in df.columns]).items():
        out[low_col(c)], out[high_col(c)] = lo, hi
    if df.attrs.get("objectives") and all(c in df.columns for c in df.attrs["objectives"]):
        out[P_FRONT] = p_front(df)
    out.attrs = dict(df.attrs)
    return out


def _errors(rows: pd.DataFrame, col: str) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(below, above) the value of ``col`` in ``rows`` to its interval's ends; None when no row has a bar."""
    if low_col(col) not in rows.columns or not len(rows):
        return None
    v = pd.to_numeric(rows[col], errors="coerce").to_numpy(dtype=float)
    below = np.nan_to_num(v - rows[low_col(col)].to_numpy(dtype=float)).clip(min=0)
    above = np.nan_to_num(rows[high_col(col)].to_numpy(dtype=float) - v).clip(min=0)
    return (below, above) if (below > 0).any() or (above > 0).any() else None


def mpl_error_bars(ax, rows: pd.DataFrame, x: str, y: str, handles: dict) -> None:
    """Grey 95% error bars on the points ``rows`` at (``x``, ``y``), under the markers."""
    ex, ey = _errors(rows, x), _errors(rows, y)
    if ex is None and ey is None:
        return
    h = ax.errorbar(rows[x], rows[y], xerr=None if ex is None else np.vstack(ex),
                    yerr=None if ey is None else np.vstack(ey), fmt="none", ecolor=BAR_COLOR, elinewidth=0.8,
                    alpha=0.7, zorder=2, label=BAR_LABEL)
    handles.setdefault(BAR_LABEL, h)


def plotly_errors(rows: pd.DataFrame, x: str, y: str) -> dict:
    """``error_x`` / ``error_y`` of a plotly Scatter of ``rows`` (the 95% intervals), where any."""
    out = {}
    for key, col in (("error_x", x), ("error_y", y)):
        e = _errors(rows, col)
        if e is not None:
            out[key] = {"type": "data", "symmetric": False, "array": e[1].tolist(), "arrayminus": e[0].tolist(),
                        "color": BAR_COLOR, "thickness": 1, "width": 2}
    return out
