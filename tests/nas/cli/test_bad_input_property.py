"""Property: whatever a user puts in a space file or on the command line, `nas search` accepts it
(exit 0, and what it would store loads again) or refuses it with one line on stderr, exit code 2,
no traceback and nothing written.

Valid space files are mutated at random: a value replaced by one of another type or out of range,
a key removed, a key added, a key given twice, the text re-encoded, truncated or salted with bytes;
option values likewise. Each example runs `nas search ... --dry-run` in this process (the same code as a real
search up to the first write; ``--dry-run`` stops there). A few examples also run the real CLI in a
subprocess, without ``--dry-run``, to show that the two paths agree.

``NAS_PROPERTY_EXAMPLES`` sets the number of examples (200 by default; e.g. 2000 for a long run).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cli_helpers import run_nas

EXAMPLES = int(os.environ.get("NAS_PROPERTY_EXAMPLES", "200"))

BASE = {  # a valid space touching every section; each example mutates a copy
    "name": "fz",
    "description": "property test",
    "task": {"name": "mqar", "params": {"vocab_size": 32, "seq_len": 16, "num_kv_pairs": 2, "n_train": 64, "n_test": 16}},
    "objectives": {"accuracy": "maximize", "latency_ms": "minimize"},
    "constraints": {"params": {"max": 2000000}},
    "trials": 2,
    "train": {"steps": 4, "batch_size": 8, "lr": 0.01, "warmup_steps": 1, "decay_to": 0.1, "threads": 0,
              "eval_samples": 16, "grad_clip": 1.0, "weight_decay": 0.01},
    "latency": {"repeats": 3, "warmup": 1, "max_seconds": 0.1, "threads": 1, "batch_size": 1, "device": "cpu",
                "target_spread": 0.05, "target_ci": 0.05, "min_sample_ms": 1.0},
    "ladder": [{"rung": "filter", "max": {"params": 1000000}}, {"rung": "train", "steps": 2, "keep": 0.5, "min_trials": 2}],
    "arch": {
        "norm": ["pre", "post"],
        "stages": [{
            "depth": [1, 2],
            "dim": [16, 32],
            "head_budget": 2,
            "mixer": {"per_layer": True, "choices": {"softmax": {"heads": [1, 2]}, "hyena": {"filter_dim": [8]}}},
            "ffn": {"type": ["mlp", "glu"], "ratio": [2, 4], "per_layer": False},
        }],
    },
}

HOSTILE = st.one_of(
    st.sampled_from([0, -1, 1, 2, 3, 10**6, 10**12, 10**30, True, False, None, "", "abc", "2e6", "-1", "nan",
                     "cpu", "cuda", "maximize", "mlp", "pre", 0.0, -0.5, 0.5, 1.5, 1e308, float("nan"), float("inf"),
                     [], [0], [1, 2], ["a"], [None], {}, {"x": 1}, {"max": "big"}, "é ü 中"]),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)


def _paths(node, prefix=()):
    """Every key path in ``node`` (dict keys and list indices)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


def _parent(d, path):
    """The container that holds ``path``'s last key."""
    for k in path[:-1]:
        d = d[k]
    return d


PATHS = sorted(_paths(BASE), key=str)
MAPPINGS = [()] + [p for p in PATHS if isinstance(_parent(BASE, p + ("",)), dict)]  # where keys can be added


@st.composite
def space_texts(draw):
    """The YAML bytes of a mutated space (or of the valid one, now and then)."""
    space = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
        if kind == "add":
            path = draw(st.sampled_from(MAPPINGS)) + (draw(st.sampled_from(["colour", "stpes", "max", "choices", 7])),)
        else:
            path = draw(st.sampled_from(PATHS))
        value = draw(HOSTILE)
        try:
            parent = _parent(space, path)
            if kind == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):  # an earlier mutation removed or replaced the path
            pass
    text = yaml.safe_dump(space, allow_unicode=True, sort_keys=False)
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["utf-16", "latin-1", "truncate", "salt", "key-twice"]))
    if encoding == "key-twice":
        return _key_twice(text, draw).encode("utf-8")
    if encoding in ("utf-16", "latin-1"):
        return text.encode(encoding, errors="replace")
    data = text.encode("utf-8")
    if encoding == "truncate":
        return data[: draw(st.integers(0, len(data)))]
    if encoding == "salt":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    return data


KEY_LINE = re.compile(r"^ *[A-Za-z_@]+:")  # a key of a mapping (not a list item's first key, "- depth:")


def _key_twice(text: str, draw) -> str:
    """``text`` with one key line given twice, the copy right below it: the same key in the same
    mapping (a key whose value is a block below it is then first null, then the block)."""
    lines = text.splitlines(keepends=True)
    at = draw(st.sampled_from([i for i, line in enumerate(lines) if KEY_LINE.match(line)]))
    return "".join(lines[: at + 1] + [lines[at]] + lines[at + 1:])


@st.composite
def key_twice_texts(draw):
    """The YAML text of the valid space with one key given twice."""
    return _key_twice(yaml.safe_dump(BASE, allow_unicode=True, sort_keys=False), draw)


OPTIONS = {  # option -> values a user might type (valid and not)
    "--trials": ["1", "3", "0", "-2", "1.5", "abc", "99999999999999999999"],
    "--workers": ["1", "2", "0", "-1", "x"],
    "--timeout": ["10", "0.5", "0", "-1", "nan", "inf", "1e400", "x"],
    "--heartbeat": ["1", "5", "0", "-3", "2.5"],
    "--cpus-per-trial": ["1", "0.5", "0", "-1", "nan"],
    "--gpus-per-trial": ["0", "1", "-1", "inf"],
    "--sampler": ["nsga2", "tpe", "random", "grid", ""],
    "--latency-lock": ["rw", "mutex", "none", "loose"],
}


@st.composite
def option_lists(draw):
    names = draw(st.lists(st.sampled_from(sorted(OPTIONS)), unique=True, max_size=3))
    return [x for name in names for x in (name, draw(st.sampled_from(OPTIONS[name])))]


@contextlib.contextmanager
def _in_dir(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def nas_in_process(argv) -> tuple[int, str, str]:
    """`nas ARGV` through the CLI's entry point in this process: (exit code, stdout, stderr)."""
    from nas.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def _files(d: Path) -> list:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def check_outcome(d: Path, space: Path, options: list, code: int, out: str, err: str) -> None:
    """The property, for one run of `nas search --space SPACE OPTIONS` in ``d``."""
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code in (0, 2), (code, err)
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        names = [str(space)] + [o for o in options if o.startswith("--")]
        assert any(n in lines[0] for n in names), (names, lines[0])  # says what is wrong
    else:
        assert len(lines) == 1 and lines[0].startswith("ok: "), err
        from nas.engine.config import load_space_checked

        stored = space.read_text(encoding="utf-8")
        assert load_space_checked(str(space), text=stored).name  # what a study stores loads again
    assert _files(d) == [space.name], _files(d)  # nothing written


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=space_texts(), options=option_lists())
def test_bad_input_is_refused_in_one_line_or_accepted(data, options):
    with tempfile.TemporaryDirectory() as tmp, _in_dir(tmp):
        d = Path(tmp)
        space = d / "space.yaml"
        space.write_bytes(data)
        argv = ["search", "--space", str(space), "--study", "fz", *options, "--dry-run"]
        check_outcome(d, space, options, *nas_in_process(argv))


@settings(max_examples=max(20, EXAMPLES // 10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=key_twice_texts())
def test_a_key_given_twice_is_refused(text):
    """yaml.safe_load keeps the second of two equal keys: a space file with two `long:` profiles
    ran the second without a word. Refused, naming the key and where."""
    with tempfile.TemporaryDirectory() as tmp, _in_dir(tmp):
        space = Path(tmp) / "space.yaml"
        space.write_text(text, encoding="utf-8")
        code, out, err = nas_in_process(["search", "--space", str(space), "--study", "fz", "--dry-run"])
        check_outcome(Path(tmp), space, [], code, out, err)
        assert code == 2 and re.search(r": line \d+, column \d+: invalid YAML: key '.+' appears twice (in|at) ", err), err


@pytest.mark.parametrize("edit,options", [
    (None, ["--trials", "1"]),  # accepted: a real search runs and stores its study
    (("train", "batch_size", 0), ["--trials", "1"]),
    (("arch", "stages", 0, "dim", [16, 10**8]), []),
    (None, ["--timeout", "0"]),
])
def test_the_cli_process_agrees_with_the_in_process_check(tmp_path, edit, options):
    """The real `nas search` (a subprocess, no --dry-run) gives the in-process verdict: the same
    exit code and the same line, or, when accepted, a study with its trials."""
    space_dict = copy.deepcopy(BASE)
    if edit is not None:
        *path, value = edit
        _parent(space_dict, tuple(path))[path[-1]] = value
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(space_dict, sort_keys=False))
    argv = ["search", "--space", str(space), "--study", "fz", *options]
    with _in_dir(tmp_path):
        dry = nas_in_process(argv + ["--dry-run"])
    real = run_nas(*argv, cwd=tmp_path)
    assert real.returncode == dry[0], (real.stderr, dry)
    if real.returncode == 2:
        def strip(s):  # the program's name differs, and free memory changes from one moment to the next
            return re.sub(r"[\d.,]+ GiB of memory", "N GiB of memory", re.sub(r"\(see `.*--help`\)", "", s.strip()))

        assert strip(real.stderr) == strip(dry[2])
        assert _files(tmp_path) == ["space.yaml"]
    else:
        import nas

        df = nas.load_trials(f"sqlite:///{tmp_path}/results/fz.db", "fz")
        assert len(df) == 1 and "study fz: 1/1 trials finished" in real.stderr
