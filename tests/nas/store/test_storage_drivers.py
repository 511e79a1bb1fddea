"""The PostgreSQL URL the README shows needs psycopg 3 (the ``postgres`` extra); a missing driver is
one line naming the package to install, exit 2, before anything is written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tomllib

from nas.errors import UserError
from nas.store.drivers import missing_driver
from nas.store.storage import open_storage
from tests.cli_helpers import invoke, write_space

ROOT = Path(__file__).resolve().parents[3]
URL = "postgresql://user@127.0.0.1:1/db"  # the README's spelling; port 1: nothing listens there


def test_the_postgres_extra_installs_the_driver_sqlalchemy_picks_for_postgresql_urls():
    from sqlalchemy.engine import make_url

    assert make_url(URL).get_dialect().driver == "psycopg"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in ("postgres", "test"):
        assert any(req.replace(" ", "").startswith("psycopg[binary]") for req in extras[extra]), extras[extra]


def test_installed_drivers_are_not_reported_missing():
    pytest.importorskip("psycopg")
    assert missing_driver(URL) is None
    assert missing_driver("sqlite:///x.db") is None
    assert missing_driver("nonsense://x") is None  # an unknown dialect: opening the storage says so


@pytest.mark.parametrize("url,module,hint", [
    (URL, "psycopg", "pip install 'mixer-nas[postgres]'"),
    ("postgresql+psycopg2://nas:secret@db:5432/nas", "psycopg2", "pip install psycopg2-binary"),
])
def test_a_missing_driver_names_the_package(monkeypatch, url, module, hint):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as if not installed
    msg = missing_driver(url)
    assert msg is not None and f"driver {module!r}" in msg and hint in msg
    assert "secret" not in msg  # the password is not printed
    with pytest.raises(UserError, match="is not installed"):
        open_storage(url, create=True)


def test_cli_says_what_to_install_and_exits_2(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    space = write_space(tmp_path)
    before = set(tmp_path.rglob("*"))
    r = invoke("search", "--space", space, "--study", "x", "--storage", URL, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot open storage ") and "Traceback" not in r.stdout
    assert "psycopg" in lines[0] and "pip install 'mixer-nas[postgres]'" in lines[0]
    assert set(tmp_path.rglob("*")) == before  # nothing written
