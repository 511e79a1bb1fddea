"""The public surface: each package's ``__all__`` names exist, and the tests use public names only.

A test may import from our packages (nas, search_spaces, evaluators, kernels) only names that are
public: not ``_``-prefixed, from a module that is not ``_``-prefixed, and listed in the module's
``__all__`` when it declares one; it reads no ``_`` attribute of what it imported; it imports no
other test file (shared helpers live in tests/cli_helpers.py). Checked on the source (AST), so a
new test that reaches into internals fails here.
"""

import ast
import importlib
import pkgutil
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PACKAGES = ("nas", "search_spaces", "evaluators", "kernels")
HELPERS = ("tests.cli_helpers",)  # shared test helpers, importable by every test


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def _public_names(module: str):
    """The module's ``__all__`` (None when it declares none, or cannot be imported here)."""
    try:
        mod = importlib.import_module(module)
    except ImportError:  # an optional dependency (ray, onnx) missing here: the other rules still hold
        return None
    names = getattr(mod, "__all__", None)
    return None if names is None else set(names) | _submodules(mod)


def _submodules(mod) -> set:
    """A package's submodules (``from evaluators import fit`` imports a module, a public one)."""
    return {m.name for m in pkgutil.iter_modules(getattr(mod, "__path__", []))}


def _import_problems(node, bound: set) -> list[str]:
    """Problems of one import statement; adds the names it binds from our packages to ``bound``."""
    problems = []
    if isinstance(node, ast.Import):
        for a in node.names:
            if a.name.split(".")[0] == "tests" and a.name not in HELPERS:
                problems.append(f"imports the test module {a.name}")
            if _ours(a.name):
                if any(_private(p) for p in a.name.split(".")):
                    problems.append(f"imports the private module {a.name}")
                bound.add(a.asname or a.name.split(".")[0])
        return problems
    module = node.module or ""
    if module.split(".")[0] == "tests" and module not in HELPERS:
        return [f"imports from the test module {module}"]
    if not _ours(module):
        return []
    if any(_private(p) for p in module.split(".")):
        problems.append(f"imports from the private module {module}")
    public = _public_names(module)
    for a in node.names:
        if _private(a.name):
            problems.append(f"imports the private name {module}.{a.name}")
        elif public is not None and a.name not in public:
            problems.append(f"imports {module}.{a.name}, which is not in {module}.__all__")
        bound.add(a.asname or a.name)
    return problems


def private_uses(source: str) -> list[str]:
    """``line: problem`` for each use of a private name of our packages in a test's source."""
    tree = ast.parse(source)
    bound: set = set()
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            problems += [f"{node.lineno}: {p}" for p in _import_problems(node, bound)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                problems.append(f"{node.lineno}: reads the private attribute {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("setattr") and len(node.args) >= 2:
            name = _patched_private(node.args, bound)
            if name:
                problems.append(f"{node.lineno}: patches the private name {name}")
    return problems


def _patched_private(args: list, bound: set):
    """The name ``setattr("nas.mod._name", ...)`` or ``setattr(<one of ours>, "_name", ...)``
    patches, when it is private; else None."""
    first, second = args[0], args[1]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        private = _ours(first.value) and any(_private(p) for p in first.value.split("."))
        return first.value if private else None
    base = first
    while isinstance(base, ast.Attribute):
        base = base.value
    if (isinstance(base, ast.Name) and base.id in bound and isinstance(second, ast.Constant)
            and isinstance(second.value, str) and _private(second.value)):
        return f"{ast.unparse(first)}.{second.value}"
    return None


def test_the_checker_finds_each_kind_of_private_use():
    source = textwrap.dedent("""
        import nas.engine.backends._worker
        from nas.cli.base import _storage
        from nas.results.trials import load_trials, json
        from tests.test_crash import helper
        import tests.test_space
        from nas.store import study
        from nas.store.study import load_study
        from optuna import _hypervolume            # another project's privates are its own business
        study._retried_numbers([])
        load_study._cache
        monkeypatch.setattr("nas.cli.base._storage", None)
        monkeypatch.setattr(study, "_sqlite_path", None)
    """)
    found = private_uses(source)
    expected = ["private module nas.engine.backends._worker", "imports the private name nas.cli.base._storage",
                "nas.results.trials.json, which is not in nas.results.trials.__all__", "test module tests.test_crash",
                "test module tests.test_space", "private attribute study._retried_numbers",
                "private attribute load_study._cache", "patches the private name nas.cli.base._storage",
                "patches the private name study._sqlite_path"]
    for what in expected:
        assert sum(what in p for p in found) == 1, (what, found)
    assert len(found) == len(expected), found


@pytest.mark.parametrize("path", sorted(TESTS.rglob("*.py")), ids=lambda p: str(p.relative_to(TESTS)))
def test_tests_use_public_names_only(path):
    assert private_uses(path.read_text()) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_in_a_packages_all_exists(package):
    mod = importlib.import_module(package)
    names = mod.__all__
    assert names and len(set(names)) == len(names)
    assert [n for n in names if not hasattr(mod, n)] == []
    assert not [n for n in names if _private(n)]


def _top_level_names(tree: ast.Module) -> set:
    """Names a module binds at its top level (in if/try blocks too)."""
    names, todo = set(), list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(a.asname or a.name.split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            todo += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", []),
                     *(s for h in getattr(node, "handlers", []) for s in h.body)]
    return names


def _declared_all(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:  # computed (sorted(_EXPORTS)): the package test imports it instead
                return None
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_every_modules_all_names_what_it_defines(package):
    missing = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text())
        declared, defined = _declared_all(tree), _top_level_names(tree)
        if declared is not None and "__getattr__" not in defined:  # lazy names: imported above instead
            absent = sorted(set(declared) - defined)
            if absent:
                missing[str(path.relative_to(ROOT))] = absent
    assert missing == {}
