"""Whether the database driver a storage URL needs is installed, and what to install when not.

SQLAlchemy picks the driver from the URL: ``postgresql://`` means psycopg 3 (``psycopg``, the
``postgres`` extra), ``postgresql+psycopg2://`` psycopg2, ``mysql://`` mysqlclient. Without the
driver it fails deep inside the first connection with "Failed to import DB access module";
:func:`missing_driver` says it up front, in one line naming the package.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["missing_driver"]

# the module SQLAlchemy imports for a dialect -> what to install
_INSTALL = {
    "psycopg": "pip install 'mixer-nas[postgres]' (psycopg 3, i.e. pip install 'psycopg[binary]')",
    "psycopg2": "pip install psycopg2-binary, or drop '+psycopg2' from the URL and pip install 'mixer-nas[postgres]'",
    "MySQLdb": "pip install mysqlclient",
    "pymysql": "pip install pymysql",
}


def missing_driver(url: str) -> Optional[str]:
    """One line saying which package to install when the driver for ``url`` cannot be imported;
    ``None`` when it can, or when the URL names no dialect SQLAlchemy knows (opening it says so)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        return None
    try:
        dialect.import_dbapi()
    except ImportError as e:
        module = (e.name or dialect.driver).split(".")[0]
        hint = _INSTALL.get(module, f"install the Python package that provides the module {module!r}")
        shown = parsed.render_as_string(hide_password=True)
        return (f"cannot open storage {shown}: its driver {module!r} ({parsed.drivername} in SQLAlchemy) is not "
                f"installed; {hint}")
    return None
