"""`nas export` files that keep what their rows mean.

A trials table (from :func:`nas.load_trials`) is written with its ``df.attrs`` (objectives and
their directions, constraint names, study name, search config), so the file alone is enough to
rebuild the Pareto front: ``nas.pareto_front(nas.load_trials("trials.parquet"))``.

- ``.parquet``: the attrs are JSON under the key ``mixer_nas`` of the file's schema metadata.
  Columns holding Python objects (lists, dicts) are written as their ``str()``.
- ``.csv``: a plain CSV (any reader opens it) plus a sidecar ``<file>.csv.meta.json`` with the
  attrs and each column's dtype, so boolean (``feasible``) and datetime columns come back typed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

import pandas as pd

from nas.errors import UserError
from search_spaces.failures import first_line
from search_spaces.unique_keys import load_json

__all__ = ["write_export", "read_export", "sidecar_path", "METADATA_KEY", "FORMAT_VERSION"]

METADATA_KEY = b"mixer_nas"
FORMAT_VERSION = 1
DIRECTIONS = ("maximize", "minimize")

PathLike = Union[str, os.PathLike]


def sidecar_path(csv_path: PathLike) -> Path:
    """Where the metadata of a CSV export lives: ``trials.csv`` -> ``trials.csv.meta.json``."""
    return Path(str(csv_path) + ".meta.json")


def _meta(df: pd.DataFrame, dtypes: bool) -> dict:
    meta = {"format": FORMAT_VERSION, "attrs": dict(df.attrs)}
    if dtypes:
        meta["dtypes"] = {c: str(t) for c, t in df.dtypes.items()}
    return meta


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise UserError(f"{path}: an export is a .csv or .parquet file")
    return suffix


def write_export(df: pd.DataFrame, path: PathLike) -> list[Path]:
    """Write ``df`` and its attrs to ``path`` (.csv or .parquet); returns the files written."""
    path = Path(path)
    if _suffix(path) == ".csv":
        meta = json.dumps(_meta(df, dtypes=True), indent=1)  # serialized first: no half-written export
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(path, index=False)
        sidecar_path(path).write_text(meta + "\n", encoding="utf-8")
        return [path, sidecar_path(path)]
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = json.dumps(_meta(df, dtypes=False)).encode()
    flat = df.copy()
    flat.attrs = {}  # stored once, under our key, not also by pandas
    for c in flat.columns:  # parquet needs one type per column
        if flat[c].dtype == object:
            flat[c] = flat[c].map(lambda v: None if v is None else v if isinstance(v, str) else str(v))
    table = pa.Table.from_pandas(flat, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: meta})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return [path]


def _check_meta(meta: dict, where: Path) -> dict:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION or not isinstance(meta.get("attrs"), dict):
        raise UserError(f"{where}: metadata is not a mixer-nas export of format {FORMAT_VERSION}")
    dtypes = meta.get("dtypes") or {}
    if not isinstance(dtypes, dict) or not all(isinstance(t, str) for t in dtypes.values()):
        raise UserError(f"{where}: dtypes: {dtypes!r} is not allowed (a mapping of column to dtype name)")
    return meta


def _read_meta(raw, where: Path) -> dict:
    """The metadata JSON of an export (a key given twice is refused), checked."""
    try:
        return _check_meta(load_json(raw), where)
    except ValueError as e:  # json.JSONDecodeError is one, as is a key given twice
        raise UserError(f"{where}: not valid JSON ({first_line(e)})") from None


def _check_attrs(attrs: dict, columns, where: Path) -> None:
    """The meaning the export carries must fit its table: each objective a column of it, with a
    direction; constraint names a list of strings. UserError naming the metadata file otherwise
    (else :func:`nas.pareto_front` of the table fails later, far from the cause)."""
    objectives = attrs.get("objectives")
    if not isinstance(objectives, dict) or not objectives:
        raise UserError(f"{where}: objectives: {objectives!r} is not allowed (a mapping of column to "
                        f"{' or '.join(DIRECTIONS)})")
    for column, direction in objectives.items():
        if direction not in DIRECTIONS:
            raise UserError(f"{where}: objectives.{column}: {direction!r} is not one of {list(DIRECTIONS)}")
        if column not in columns:
            raise UserError(f"{where}: objectives.{column}: the table has no column {column!r}")
    constraints = attrs.get("constraints", [])
    if not isinstance(constraints, list) or not all(isinstance(c, str) for c in constraints):
        raise UserError(f"{where}: constraints: {constraints!r} is not allowed (a list of constraint names)")


def _read_csv(path: Path) -> pd.DataFrame:
    side = sidecar_path(path)
    if not side.exists():
        raise UserError(f"{path}: no {side.name} beside it, so the objectives are unknown; "
                        f"export again with `nas export`, or read the table alone with pandas.read_csv")
    try:
        meta = _read_meta(side.read_text(encoding="utf-8"), side)
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{side}: cannot be read ({first_line(e)})") from None
    try:
        df = pd.read_csv(path)
        for col, dtype in (meta.get("dtypes") or {}).items():
            if col not in df.columns:
                continue
            if dtype in ("bool", "boolean"):
                df[col] = df[col].astype("boolean")
            elif dtype.startswith("datetime64"):
                df[col] = pd.to_datetime(df[col])
    except (OSError, ValueError, TypeError) as e:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise UserError(f"{path}: cannot be read as the CSV table of a mixer-nas export ({first_line(e)})") from None
    _check_attrs(meta["attrs"], df.columns, side)
    df.attrs = meta["attrs"]
    return df


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        raw = (schema.metadata or {}).get(METADATA_KEY)
        if raw is None:
            raise UserError(f"{path}: no mixer-nas metadata (not written by `nas export`); "
                            f"read the table alone with pandas.read_parquet")
        meta = _read_meta(raw, path)
        df = pq.read_table(path).to_pandas()
    except (OSError, ValueError, TypeError, pa.ArrowException) as e:
        raise UserError(f"{path}: cannot be read as a Parquet file ({first_line(e)})") from None
    _check_attrs(meta["attrs"], df.columns, path)
    df.attrs = meta["attrs"]
    return df


def read_export(path: PathLike) -> pd.DataFrame:
    """A table written by :func:`write_export` (or ``nas export``), with its ``df.attrs``."""
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    return _read_csv(path) if suffix == ".csv" else _read_parquet(path)
