"""The public surface: each package's ``__all__`` names exist, and modules and tests use public names only.

A test may import from our packages (nas, search_spaces, evaluators, kernels) only names that are
public: not ``_``-prefixed, from a module that is not ``_``-prefixed, and listed in the module's
``__all__`` when it declares one; it reads no ``_`` attribute of what it imported; it imports no
other test file (shared helpers live in tests/cli_helpers.py). The modules of the packages and the
benchmark scripts keep the same rule towards each other (a ``_`` module may be imported by its own
package's modules, as ``_repo_path`` by the benchmarks). Checked on the source (AST), so new code
that reaches into another module's internals fails here.

A package's public names (its ``__all__`` and the names it exports lazily) are never the names of
its submodules: ``import pkg.name`` would rebind ``pkg.name`` from the function to the module.
"""

import ast
import importlib
import importlib.util
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PACKAGES = ("nas", "search_spaces", "evaluators", "kernels")
HELPERS = ("tests.cli_helpers",)  # shared test helpers, importable by every test
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = frozenset(p.stem for p in BENCHMARKS.glob("*.py"))  # what the benchmark scripts import from each other


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _ours(module: str, local=frozenset()) -> bool:
    return module.split(".")[0] in PACKAGES or module.split(".")[0] in local


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


def _private_module(module: str, home) -> bool:
    """Whether ``module`` is private to a package other than ``home`` (the importer's package:
    ``""`` for the top level, None for a test, which may import no private module)."""
    parts = module.split(".")
    return any(_private(p) for p in parts) and (home is None or any(_private(p) for p in parts[:-1])
                                                or ".".join(parts[:-1]) != home)


def _import_problems(node, bound: set, local=frozenset(), home=None) -> list[str]:
    """Problems of one import statement; adds the names it binds from our packages to ``bound``."""
    problems = []
    if isinstance(node, ast.Import):
        for a in node.names:
            if a.name.split(".")[0] == "tests" and a.name not in HELPERS:
                problems.append(f"imports the test module {a.name}")
            if _ours(a.name, local):
                if _private_module(a.name, home):
                    problems.append(f"imports the private module {a.name}")
                bound.add(a.asname or a.name.split(".")[0])
        return problems
    module = node.module or ""
    if node.level:
        return [f"imports relatively from {'.' * node.level}{module} (name the package)"]
    if module.split(".")[0] == "tests" and module not in HELPERS:
        return [f"imports from the test module {module}"]
    if not _ours(module, local):
        return []
    if _private_module(module, home):
        problems.append(f"imports from the private module {module}")
    public = _public_names(module) if _ours(module) else None
    for a in node.names:
        if _private(a.name):
            problems.append(f"imports the private name {module}.{a.name}")
        elif public is not None and a.name not in public:
            problems.append(f"imports {module}.{a.name}, which is not in {module}.__all__")
        bound.add(a.asname or a.name)
    return problems


def private_uses(source: str, local=frozenset(), home=None) -> list[str]:
    """``line: problem`` for each use of a private name of our packages in a test's source (or in a
    module's: ``local`` are more top-level modules that count as ours, the benchmark scripts for a
    benchmark; ``home`` is the package of the module, whose private modules it may import)."""
    tree = ast.parse(source)
    bound: set = set()
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            problems += [f"{node.lineno}: {p}" for p in _import_problems(node, bound, local, home)]
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
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("getattr", "hasattr") and len(node.args) >= 2:
            name = _patched_private(node.args, bound)
            if name:
                problems.append(f"{node.lineno}: reads the private attribute {name}")
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
        from .trials import load_trials
        study._retried_numbers([])
        load_study._cache
        getattr(study, "_lock_path")
        getattr(optuna_study, "_storage")          # not ours either
        monkeypatch.setattr("nas.cli.base._storage", None)
        monkeypatch.setattr(study, "_sqlite_path", None)
    """)
    found = private_uses(source)
    expected = ["private module nas.engine.backends._worker", "imports the private name nas.cli.base._storage",
                "nas.results.trials.json, which is not in nas.results.trials.__all__", "test module tests.test_crash",
                "test module tests.test_space", "relatively from .trials", "private attribute study._retried_numbers",
                "private attribute load_study._cache", "private attribute study._lock_path",
                "patches the private name nas.cli.base._storage", "patches the private name study._sqlite_path"]
    for what in expected:
        assert sum(what in p for p in found) == 1, (what, found)
    assert len(found) == len(expected), found


def test_the_checker_lets_a_package_import_its_own_private_modules_only():
    source = textwrap.dedent("""
        import _repo_path
        from nas.engine.backends._worker import run
        from nas.engine._signals import install
        import local_paths
        local_paths._median([])
        from local_paths import _median
    """)
    assert private_uses(source, home="nas.engine.backends") == ["4: imports from the private module nas.engine._signals"]
    assert private_uses(source, local=SCRIPTS | {"local_paths"}, home="") == [
        "3: imports from the private module nas.engine.backends._worker",
        "4: imports from the private module nas.engine._signals", "7: imports the private name local_paths._median",
        "6: reads the private attribute local_paths._median"]


@pytest.mark.parametrize("path", sorted(TESTS.rglob("*.py")), ids=lambda p: str(p.relative_to(TESTS)))
def test_tests_use_public_names_only(path):
    assert private_uses(path.read_text()) == []


def _source_files() -> list[Path]:
    return sorted(p for d in (*PACKAGES, "benchmarks") for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("path", _source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_use_no_private_name_of_another_module(path):
    """A ``_`` name is its module's own: another module (or benchmark script) that needs it needs a
    public name. Optuna's privates are reached in nas/store/optuna_access.py only (test_trial_attrs)."""
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "benchmarks":
        assert private_uses(path.read_text(), local=SCRIPTS, home="") == []
    else:
        assert private_uses(path.read_text(), home=".".join(rel.parts[:-1])) == []


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


def _packages() -> list[str]:
    """Every package and subpackage of ours, by module name."""
    return sorted(".".join(p.parent.relative_to(ROOT).parts) for d in PACKAGES for p in (ROOT / d).rglob("__init__.py"))


def _lazy_names(package: str) -> set:
    """The names a package's ``__init__`` exports lazily: the keys of its top-level maps from a name
    to the module that defines it (nas's ``_LAZY``, the ``_EXPORTS`` of search_spaces.lazy)."""
    tree = ast.parse((ROOT / package.replace(".", "/") / "__init__.py").read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and node.value.keys:
            pairs = list(zip(node.value.keys, node.value.values))
            if all(isinstance(c, ast.Constant) and isinstance(c.value, str) for pair in pairs for c in pair) and all(
                    v.value.split(".")[0] in PACKAGES for _, v in pairs):
                names |= {k.value for k, _ in pairs}
    return names


def test_lazy_names_are_read_from_the_packages_maps():
    assert {"load_trials", "search", "load_model"} <= _lazy_names("nas")
    assert {"build_model", "load_space", "ArchSpec"} <= _lazy_names("search_spaces")
    assert "evaluate" in _lazy_names("evaluators")


@pytest.mark.parametrize("package", _packages())
def test_no_public_name_of_a_package_is_a_submodules_name(package):
    mod = importlib.import_module(package)
    public = set(getattr(mod, "__all__", ())) | _lazy_names(package)
    assert public & {m.name for m in pkgutil.iter_modules(mod.__path__)} == set()


def test_evaluators_evaluate_stays_the_function_once_its_module_is_imported():
    """``evaluators.evaluate`` is the function whichever of the package's names or modules was
    used first (a fresh interpreter for each order)."""
    check = "assert evaluators.evaluate is evaluators.evaluation.evaluate and callable(evaluators.evaluate)"
    orders = ["import evaluators.evaluation, evaluators",
              "import evaluators; evaluators.EvalSettings; import evaluators.evaluation",
              "import evaluators; evaluators.evaluate; import evaluators.evaluation",
              "from evaluators.evaluation import EvalSettings; import evaluators"]
    for first in orders:
        r = subprocess.run([sys.executable, "-c", f"{first}; {check}"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, (first, r.stderr[-1500:])


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_no_benchmark_script_is_named_like_a_module(script):
    """``python benchmarks/x.py`` puts benchmarks/ first on ``sys.path``, where a script named like a
    package of ours, the standard library's or an installed one would be imported in its place."""
    assert script not in sys.stdlib_module_names and script not in PACKAGES
    spec = importlib.util.find_spec(script)
    assert spec is None or Path(spec.origin or "").parent == BENCHMARKS, spec
