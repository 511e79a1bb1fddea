"""Every third-party package the four import packages import is declared in pyproject.toml.

The imports are read from the source (module level and inside functions, plus the literal names
given to ``importlib.import_module`` / ``find_spec``), mapped from import name to distribution
name, and looked up in ``[project] dependencies`` or the optional extra that covers them.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nas", "search_spaces", "evaluators", "kernels")

# import name -> distribution name, where they differ
DISTRIBUTION = {"yaml": "pyyaml", "sklearn": "scikit-learn", "psycopg": "psycopg", "psycopg2": "psycopg2-binary",
                "optuna_dashboard": "optuna-dashboard", "PIL": "pillow"}
# Imported only in a fallback for versions of another declared package that depend on it.
COMES_WITH = {"click": "typer"}  # nas/cli/app.py: typer versions that do not vendor click depend on it
# Imports that may only come from an extra (the code imports them where that feature is used).
EXTRA_ONLY = {"ray": "ray", "psycopg": "postgres", "optuna_dashboard": "dashboard", "onnxruntime": "onnx"}


def _literal_modules(call: ast.Call) -> list[str]:
    """``importlib.import_module("x")`` / ``importlib.util.find_spec("x")`` with a literal name."""
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
    if name in ("import_module", "find_spec") and call.args and isinstance(call.args[0], ast.Constant) \
            and isinstance(call.args[0].value, str):
        return [call.args[0].value]
    return []


def imported_top_level(path: Path) -> set[str]:
    """Top-level names of every absolute import in a module, at any depth."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call):
            names.update(_literal_modules(node))
    return {n.split(".")[0] for n in names}


def third_party_imports() -> dict[str, set[str]]:
    """import name -> files importing it, stdlib and our own packages left out."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in imported_top_level(path):
                if name not in sys.stdlib_module_names and name not in PACKAGES and name != "__future__":
                    found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def _dist_name(requirement: str) -> str:
    """'ray[tune]>=2.41' -> 'ray'; 'triton; sys_platform == "linux"' -> 'triton' (normalized)."""
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {name: {_dist_name(r) for r in reqs} for name, reqs in project["optional-dependencies"].items()}
    return {_dist_name(r) for r in project["dependencies"]}, extras


def test_the_walk_sees_function_level_and_literal_imports():
    found = third_party_imports()
    assert "nas/store/study.py" in found["sqlalchemy"] or "nas/store/heartbeats.py" in found["sqlalchemy"]
    assert "triton" in found and "ray" in found  # imported inside functions only
    assert not {"os", "kernels", "nas"} & set(found)


def test_every_third_party_import_is_declared():
    deps, extras = declared()
    missing = []
    for name, files in sorted(third_party_imports().items()):
        dist = DISTRIBUTION.get(name, name).lower().replace("_", "-")
        if name in EXTRA_ONLY:
            ok = dist in extras.get(EXTRA_ONLY[name], set())
        else:
            ok = dist in deps or COMES_WITH.get(name) in deps
        if not ok:
            missing.append(f"{name} (distribution {dist}; imported in {', '.join(sorted(files))})")
    assert not missing, "imported but not declared in pyproject.toml: " + "; ".join(missing)


def test_the_test_extra_covers_the_other_extras():
    """`pip install -e '.[test]'` (make test, CI) installs what every optional feature needs."""
    _, extras = declared()
    for name in ("ray", "postgres", "dashboard", "onnx"):
        assert extras[name] <= extras["test"], (name, extras[name] - extras["test"])
