"""Bad input: one clear line naming what is wrong, exit code 2, no traceback, nothing written."""

import pytest

from tests.cli_helpers import invoke as run_nas
from tests.cli_helpers import write_space

pytestmark = pytest.mark.slow


def _check(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def _nothing_written(d, before):
    after = {p.relative_to(d) for p in d.rglob("*")}
    assert after == before, after - before


BAD = [
    ("depth: [1, 2]", "depth: [1, 2", "invalid YAML"),
    ("          softmax: {heads: [1, 2]}", "          softmax: {heads: [1, 2]}\n          mamba: {}", "arch.stages[0].mixer.choices.mamba: unknown mixer"),
    ("dim: [16, 32]", "dim: [16, 32]\n      colour: red", "arch.stages[0].colour: unknown key"),
    ("depth: [1, 2]", "depth: []", "arch.stages[0].depth: empty choice list"),
    ("depth: [1, 2]", "depth: deep", "arch.stages[0].depth: 'deep' is not allowed (an int >= 1)"),
    ("objectives: {accuracy: maximize, latency_ms: minimize}", "objectives: {accuracy: up}", "objectives.accuracy"),
    ("objectives: {accuracy: maximize, latency_ms: minimize}", "objectives: {happiness: maximize}", "objectives.happiness: unknown metric"),
    ("train: {steps: 5,", "train: {stepz: 5,", "train.stepz: unknown setting"),
    ("trials: 3", "trials: 3\ntrials: 30", "line 6, column 1: invalid YAML: key 'trials' appears twice at the top level (first on line 5)"),
    ("          hyena: {filter_dim: [8]}", "          hyena: {filter_dim: [8]}\n          softmax: {heads: [4]}",
     "line 17, column 11: invalid YAML: key 'softmax' appears twice in arch.stages[0].mixer.choices (first on line 15)"),
    ("latency: {", "ladder: [{rung: predict, max: {latency_ms: -1}}]\nlatency: {",
     "ladder[0].max.latency_ms: -1.0 is not allowed (a latency in ms > 0"),
]


@pytest.mark.parametrize("old,new,fragment", BAD, ids=[b[2].split(":")[0] for b in BAD])
def test_malformed_space_file(tmp_path, old, new, fragment):
    p = write_space(tmp_path)
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new))
    before = {q.relative_to(tmp_path) for q in tmp_path.rglob("*")}
    r = run_nas("search", "--space", p, "--study", "x", "--trials", 1, cwd=tmp_path)
    _check(r, str(p), fragment)
    _nothing_written(tmp_path, before)


def test_unknown_space(tmp_path):
    r = run_nas("search", "--space", "no-such-space", cwd=tmp_path)
    _check(r, "no-such-space", "built-in spaces")
    assert not (tmp_path / "results").exists()


def test_unknown_study(tmp_path):
    for cmd in ("status", "resume", "pareto", "show"):
        extra = ["--trial", "0"] if cmd == "show" else []
        r = run_nas(cmd, "--study", "ghost", *extra, cwd=tmp_path)
        _check(r, "ghost")
    assert not (tmp_path / "results").exists()


def test_bad_storage_url(tmp_path):
    p = write_space(tmp_path)
    for url, frag in [("nonsense", "bad storage URL"), ("ftp://x/y", "scheme 'ftp'"),
                      ("postgresql://nobody@127.0.0.1:1/none", "storage postgresql://nobody@127.0.0.1:1/none: ")]:
        r = run_nas("search", "--space", p, "--study", "x", "--storage", url, cwd=tmp_path)
        _check(r, frag)
    r = run_nas("status", "--study", "x", "--storage", f"sqlite:///{tmp_path}/none.db", cwd=tmp_path)
    _check(r, "does not exist")
    assert not (tmp_path / "none.db").exists()


def test_study_name_reused_with_other_space(tmp_path):
    a = write_space(tmp_path, name="a.yaml", steps=2)
    b = write_space(tmp_path, name="b.yaml", steps=3)
    url = f"sqlite:///{tmp_path}/s.db"
    run_nas("search", "--space", a, "--study", "s", "--storage", url, "--trials", 1, cwd=tmp_path, check=True)
    r = run_nas("search", "--space", b, "--study", "s", "--storage", url, "--trials", 2, cwd=tmp_path)
    _check(r, "study 's'", "differs")
    import nas

    assert len(nas.load_trials(url, "s")) == 1  # nothing was added


def test_bad_options(tmp_path):
    _check(run_nas("search", "--sampler", "grid", cwd=tmp_path), "--sampler")
    _check(run_nas("search", "--backend", "slurm", cwd=tmp_path), "--backend")
    _check(run_nas("search", "--backend", "ray", "--latency-lock", "loose", cwd=tmp_path), "--latency-lock")
    assert not list(tmp_path.glob("results/*.db")) and not list(tmp_path.glob("*.db"))  # refused before a study
    p = write_space(tmp_path, steps=1)
    url = f"sqlite:///{tmp_path}/e.db"
    run_nas("search", "--space", p, "--study", "e", "--storage", url, "--trials", 1, cwd=tmp_path, check=True)
    _check(run_nas("export", "--study", "e", "--storage", url, "--out", tmp_path / "x.xlsx", cwd=tmp_path), ".csv or .parquet")
    _check(run_nas("show", "--study", "e", "--storage", url, "--trial", 99, cwd=tmp_path), "no trial 99")
    _check(run_nas("pareto", "--study", "e", "--storage", url, "--format", "xml", cwd=tmp_path), "--format")


@pytest.mark.parametrize("argv,fragment", [
    (["search", "--trials", "0"], "--trials"),
    (["show", "--study", "x"], "--trial"),
    (["frobnicate"], "No such command"),
])
def test_usage_errors_are_one_line(argv, fragment, capsys):
    from nas.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


# a profile with which no model of the space fits this machine (given 256 MiB: nothing large is allocated)
TOO_LARGE = [
    ("{scale: {dim: 1000x}}", "deploy.long.scale.dim: 1000x is not allowed (too large for this machine: the smallest "
                              "model of this space at profile long has at least"),
    ("{seq_len: 1000000000}", "deploy.long.seq_len: 1000000000 is not allowed (too large for this machine"),
]


@pytest.mark.parametrize("profile,fragment", TOO_LARGE, ids=["scale.dim", "seq_len"])
@pytest.mark.parametrize("command", [("search", "--study", "x"), ("search", "--study", "x", "--dry-run"),
                                     ("profile", "--study", "x"), ("fidelity", "--latency", "--n", "3")],
                         ids=["search", "dry-run", "profile", "fidelity-latency"])
def test_a_profile_too_large_for_this_machine_is_refused_at_load(tmp_path, monkeypatch, command, profile, fragment):
    """Refused when the space is loaded, in one line naming the profile's key, before anything is
    built or written: `nas search` (and --dry-run), `nas profile`, `nas fidelity --latency`."""
    from evaluators.fit import MEMORY_ENV

    monkeypatch.setenv(MEMORY_ENV, "256MiB")
    p = write_space(tmp_path, steps=1)
    p.write_text(p.read_text() + f"deploy:\n  long: {profile}\n")
    before = {q.relative_to(tmp_path) for q in tmp_path.rglob("*")}
    r = run_nas(*command, "--space", p, cwd=tmp_path)
    _check(r, f"{p}: {fragment}", "of memory are available)")
    _nothing_written(tmp_path, before)


def test_a_malformed_available_memory_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXER_NAS_MEMORY", "plenty")
    p = write_space(tmp_path, steps=1)
    _check(run_nas("search", "--space", p, "--dry-run", cwd=tmp_path), "$MIXER_NAS_MEMORY: 'plenty' is not allowed")
