"""The packages depend one way: nas -> evaluators -> search_spaces -> kernels (docs/architecture.md).

Every import statement is read from the source (module level and inside functions, where the lazy
imports are), and so are the module names given as strings to ``importlib.import_module`` and to a
registry's ``builtins``. A package may import itself and the packages below it; nothing below
``nas`` imports Optuna, Ray or the CLI's libraries. The exceptions are listed here with their reason.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("kernels", "search_spaces", "evaluators", "nas")  # each may import those before it
ENGINE_ONLY = ("optuna", "ray", "typer", "rich")  # the study, the Ray backend and the CLI: nas/ only

# (importing file, imported module) -> why it is allowed
ALLOWED = {
    ("evaluators/fidelity.py", "optuna"): "`nas fidelity` draws its architectures with Optuna's RandomSampler, "
                                          "the define-by-run trial search_spaces.sample() takes; it keeps no study",
}


def _imported(tree: ast.AST):
    """(line, module name) of every import in ``tree``, at any depth, and of the string constants
    passed to ``import_module(...)`` or as ``builtins=(...)``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            args = list(node.args) if name == "import_module" else [k.value for k in node.keywords if k.arg == "builtins"]
            for arg in args:
                for const in ast.walk(arg):
                    if isinstance(const, ast.Constant) and isinstance(const.value, str):
                        yield node.lineno, const.value


def _violations(package: str) -> list[str]:
    rank = LAYERS.index(package)
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for line, module in _imported(ast.parse(path.read_text(), filename=rel)):
            top = module.split(".")[0]
            upward = top in LAYERS and LAYERS.index(top) > rank
            engine = top in ENGINE_ONLY and package != "nas"
            if (upward or engine) and (rel, top) not in ALLOWED:
                found.append(f"{rel}:{line}: {package} imports {module}")
    return found


@pytest.mark.parametrize("package", LAYERS)
def test_imports_point_down(package):
    assert not _violations(package), "\n".join(_violations(package))


def test_every_allowed_exception_is_still_needed():
    for rel, top in ALLOWED:
        tree = ast.parse((ROOT / rel).read_text())
        assert any(m.split(".")[0] == top for _, m in _imported(tree)), f"{rel} no longer imports {top}: drop it"


def test_the_walk_sees_function_level_and_string_imports():
    src = ("def f():\n    from evaluators.tasks import task_io_for\n"
           "R = Registry('x', builtins=('nas.engine.backends.local',))\n"
           "importlib.import_module('evaluators.metrics')\n")
    assert {m for _, m in _imported(ast.parse(src))} == {"evaluators.tasks", "nas.engine.backends.local", "evaluators.metrics"}


# ------------------------------------------------------------------------------ function length
MAX_LINES = 60  # issue 14: one job per function; Triton kernels (@triton.jit) are exempt


def _long_functions(source: str) -> list[str]:
    """``name (lines)`` of every function in ``source`` longer than MAX_LINES, decorators and
    docstring included, except Triton kernels."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            jit = any("jit" in ast.unparse(d) for d in node.decorator_list)
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            if not jit and node.end_lineno - start + 1 > MAX_LINES:
                out.append(f"{node.name} ({node.end_lineno - start + 1} lines)")
    return out


@pytest.mark.parametrize("package", LAYERS)
def test_no_function_is_longer_than_60_lines(package):
    long = {str(p.relative_to(ROOT)): f for p in sorted((ROOT / package).rglob("*.py"))
            if (f := _long_functions(p.read_text()))}
    assert long == {}


def test_the_length_check_counts_decorators_and_exempts_triton_kernels():
    body = "\n".join(f"    x{i} = {i}" for i in range(58))
    assert _long_functions(f"def f():\n{body}\n") == []  # 59 lines
    assert _long_functions(f"@cache\ndef f():\n{body}\n    return x0\n") == ["f (61 lines)"]
    assert _long_functions(f"@triton.jit\ndef k():\n{body}\n    return x0\n") == []


# ------------------------------------------------------------------------------ the module graph
def _module_names() -> dict:
    """Dotted name -> path of every module of the four packages (a package is its __init__.py)."""
    mods = {}
    for package in LAYERS:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _module_graph(mods: dict) -> dict:
    """Module -> the modules of ours it imports, anywhere in its source (``from a.b import c`` is an
    edge to ``a.b.c`` when that is a module, else to ``a.b``)."""
    graph = {}
    for mod, path in mods.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    edges |= {full} if full in mods else {node.module} & set(mods)
        graph[mod] = edges - {mod}
    return graph


def _cycles(graph: dict) -> list[list[str]]:
    """Every set of modules that import each other round a loop (strongly connected components of more
    than one module), found by repeated depth-first reachability: small graphs, plain code."""
    reach = {}
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        reach[start] = seen
    groups = {frozenset([m] + [o for o in reach[m] if m in reach[o]]) for m in graph if m in reach[m]}
    return sorted(sorted(g) for g in groups)


def test_no_import_cycle():
    """Imports inside functions count too: a cycle that works because one side imports late is still a
    knot a newcomer has to untie before moving either module."""
    assert _cycles(_module_graph(_module_names())) == []


def test_the_cycle_finder_finds_a_cycle_and_only_it():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_only_the_command_line_imports_it():
    """The CLI sits on top: nas/cli/ imports the engine, never the other way round, and a command module
    imports nas.cli.base (the app), never the package that imports it."""
    graph = _module_graph(_module_names())
    outside = {m for m, edges in graph.items() if not m.startswith("nas.cli") and m != "nas.__main__"
               and any(e == "nas.cli" or e.startswith("nas.cli.") for e in edges)}
    assert outside == set()
    back = {m for m, edges in graph.items() if m.startswith("nas.cli.") and "nas.cli" in edges}
    assert back == set()


# ------------------------------------------------------------------------------ one door to storage
STORAGE_DOOR = "nas/store/storage.py"  # the one module that makes a storage (docs/architecture.md)
STORE = "nas/store/"  # where an Optuna study is made, loaded or deleted from a storage object
MAKES_STORAGE = ("RDBStorage", "create_engine", "get_storage")
STUDY_CALLS = ("create_study", "load_study", "delete_study", "copy_study", "get_all_study_names",
               "get_all_study_summaries")


def _storage_opened(rel: str, source: str) -> list[str]:
    """``line: call`` of each place in ``source`` (the file ``rel``) that makes a storage outside
    the door: an ``RDBStorage(...)``, ``create_engine(...)`` or ``get_storage(...)``, or one of
    Optuna's study functions given a storage (a URL makes one) outside nas/store/."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", getattr(node.func, "id", ""))
        with_storage = any(k.arg == "storage" for k in node.keywords) or (name == "load_study" and len(node.args) > 1)
        optuna_study = (name in STUDY_CALLS and isinstance(node.func, ast.Attribute)
                        and ast.unparse(node.func.value) == "optuna" and with_storage)
        if (name in MAKES_STORAGE and rel != STORAGE_DOOR) or (optuna_study and not rel.startswith(STORE)):
            found.append(f"{rel}:{node.lineno}: {ast.unparse(node.func)}(...)")
    return found


@pytest.mark.parametrize("package", [*LAYERS, "benchmarks"])
def test_only_the_door_opens_a_storage(package):
    found = [f for p in sorted((ROOT / package).rglob("*.py"))
             for f in _storage_opened(p.relative_to(ROOT).as_posix(), p.read_text())]
    assert not found, "open it with nas.store.storage.open_storage (or load the study with nas.store.study):\n" + \
        "\n".join(found)


def test_the_door_check_sees_each_way_to_open_a_storage():
    src = ("import optuna, sqlalchemy as sa\nfrom optuna.storages import RDBStorage\n"
           "s = RDBStorage(url)\ne = sa.create_engine(url)\ng = optuna.storages.get_storage(url)\n"
           "st = optuna.load_study(study_name='x', storage=url)\nst = optuna.load_study('x', url)\n"
           "m = optuna.create_study()\nr = sa.make_url(url)\n")
    assert [f.split(": ")[1] for f in _storage_opened("nas/cli/x.py", src)] == [
        "RDBStorage(...)", "sa.create_engine(...)", "optuna.storages.get_storage(...)", "optuna.load_study(...)",
        "optuna.load_study(...)"]  # an in-memory study and a parsed URL open nothing
    assert len(_storage_opened("nas/store/study.py", src)) == 3  # the study functions, given the door's storage
    assert _storage_opened(STORAGE_DOOR, src.replace("optuna.load_study", "len")) == []
