"""Bookkeeping of which implementation each public op used last."""

_LAST: dict[str, str] = {}


def record(op: str, path: str) -> None:
    _LAST[op] = path


def last_path(op: str) -> str | None:
    """Name of the path the most recent call of ``op`` took (``None`` if never called)."""
    return _LAST.get(op)
