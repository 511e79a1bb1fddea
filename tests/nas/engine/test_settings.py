"""Every setting is declared once (type and range) and checked where it is read: the space file's
sections, the CLI options, and whether the space's models can fit this machine at all."""

import pickle
from dataclasses import MISSING, fields

import pytest

from search_spaces.schema import Check, SettingError, from_mapping
from tests.cli_helpers import TINY_SPACE, write_space

BIG = 10**30


CHECKS = [
    (Check(int, low=1), 1, 1),
    (Check(int, low=1), 0, "0 is not allowed (an int >= 1)"),
    (Check(int, low=1), True, "True is not allowed (an int >= 1)"),
    (Check(int, low=1), 2.0, "2.0 is not allowed (an int >= 1)"),
    (Check(float, above=0), 3, 3.0),
    (Check(float, above=0), "3e-3", 0.003),  # YAML 1.1 reads 3e-3 as text
    (Check(float, above=0), 0, "0 is not allowed (a number > 0)"),
    (Check(float, above=0), float("nan"), "nan is not allowed (a number > 0)"),
    (Check(float, above=0), float("inf"), "inf is not allowed (a number > 0)"),
    (Check(float, above=0), BIG**20, "is not allowed (a number > 0)"),  # beyond the float range
    (Check(float, low=0, high=1), 1.5, "1.5 is not allowed (a number in [0, 1])"),
    (Check(float, above=0, high=1), 0.0, "0.0 is not allowed (a number in (0, 1])"),
    (Check(int, above=2, below=5, what="an int between 2 and 5, exclusive"), 5, "5 is not allowed (an int between"),
    (Check(str, choices=("cpu", "cuda")), "tpu", "'tpu' is not allowed (one of ['cpu', 'cuda'])"),
    (Check(bool), "yes", "'yes' is not allowed (true or false)"),
    (Check(str, pattern=r"cpu|cuda(:[0-9]+)?", what="cpu, cuda or cuda:<index>"), "cuda:x",
     "'cuda:x' is not allowed (cpu, cuda or cuda:<index>)"),
    (Check(str, nonempty=True), "", "'' is not allowed (a non-empty string)"),
    (Check(float, above=0, optional=True), None, None),
    (Check(int, low=1), 10**5000, 10**5000),  # more digits than repr() will print: still judged
    (Check(int, high=0), 10**5000, "an int of about 5000 digits is not allowed (an int <= 0)"),
]


@pytest.mark.parametrize("check,value,out", CHECKS, ids=[f"{c.describe()}:{type(v).__name__}" for c, v, _ in CHECKS])
def test_check(check, value, out):
    if isinstance(out, str):
        with pytest.raises(SettingError) as e:
            check.coerce(value, "a.b")
        assert str(e.value).startswith("a.b: ") and out in str(e.value), str(e.value)
        assert check.error(value) == e.value.message
    else:
        assert check.coerce(value, "a.b") == out and check.error(value) is None


def _settings_classes():
    from evaluators.confirmation import ConfirmConfig
    from evaluators.latency import LatencyConfig
    from evaluators.train import TrainConfig
    from nas.engine.config import SearchConfig

    return [TrainConfig, LatencyConfig, SearchConfig, ConfirmConfig]


@pytest.mark.parametrize("cls", _settings_classes(), ids=lambda c: c.__name__)
def test_declared_defaults_pass_their_own_checks(cls):
    declared = [f for f in fields(cls) if "check" in f.metadata]
    assert declared
    for f in declared:
        if f.default is not MISSING:
            assert f.metadata["check"].error(f.default) is None, (cls.__name__, f.name)


def test_from_mapping_names_the_key():
    from evaluators.latency import LatencyConfig
    from evaluators.train import TrainConfig

    assert from_mapping(TrainConfig, {"lr": 1, "steps": 3}, "train") == TrainConfig(lr=1.0, steps=3)
    for section, cls, key, value, fragment in [
        ("train", TrainConfig, "batch_size", 0, "train.batch_size: 0 is not allowed (an int >= 1)"),
        ("train", TrainConfig, "steps", 0, "train.steps: 0 is not allowed (an int >= 1)"),
        ("train", TrainConfig, "lr", 0, "train.lr: 0 is not allowed (a number > 0)"),
        ("latency", LatencyConfig, "repeats", 0, "latency.repeats: 0 is not allowed (an int >= 1)"),
        ("latency", LatencyConfig, "threads", 0, "latency.threads: 0 is not allowed (an int >= 1)"),
        ("latency", LatencyConfig, "max_seconds", 0, "latency.max_seconds: 0 is not allowed (a number > 0)"),
        ("latency", LatencyConfig, 7, 1, "latency.7: unknown setting"),  # a YAML int key
    ]:
        with pytest.raises(SettingError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            from_mapping(cls, {key: value}, section)
    with pytest.raises(SettingError, match=r"train: \[1\] is not allowed \(a mapping\)"):
        from_mapping(TrainConfig, [1], "train")


def test_errors_survive_pickling():  # Ray sends exceptions between processes
    from search_spaces.space import SpaceError

    for e in (SettingError("train.steps", "0 is not allowed"), SpaceError("my.yaml", "train.steps", "no")):
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e) and back.path == e.path


# ------------------------------------------------------------------ the CLI: one line, exit 2
def _nas(argv, capsys):
    from nas.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def _refused(argv, capsys, tmp_path, *fragments):
    before = sorted(tmp_path.rglob("*"))
    code, out, err = _nas(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, out, err)
    assert "Traceback" not in out + err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    assert sorted(tmp_path.rglob("*")) == before  # nothing written
    return lines[0]


SETTINGS = [  # (text in TINY_SPACE, replacement, what the one line says)
    ("batch_size: 16", "batch_size: 0", "train.batch_size: 0 is not allowed (an int >= 1)"),
    ("steps: 5", "steps: 0", "train.steps: 0 is not allowed (an int >= 1)"),
    ("lr: 0.01", "lr: -1", "train.lr: -1 is not allowed (a number > 0)"),
    ("lr: 0.01", "lr: 0.01, seeds: 0", "train.seeds: 0 is not allowed (an int >= 1)"),
    ("repeats: 3", "repeats: 0", "latency.repeats: 0 is not allowed (an int >= 1)"),
    ("repeats: 3", "repeats: 3, threads: 0", "latency.threads: 0 is not allowed (an int >= 1)"),
    ("max_seconds: 0.2", "max_seconds: .nan", "latency.max_seconds: nan is not allowed (a number > 0)"),
    ("repeats: 3", "repeats: 3, device: tpu", "latency.device: 'tpu' is not allowed (cpu, cuda or cuda:<index>)"),
    ("trials: 3", "trials: 0", "trials: 0 is not allowed (an int in [1, 1000000000])"),
    ("name: e2e", "name: [a]", "name: ['a'] is not allowed (a non-empty string)"),
    ("seq_len: 16", "seq_len: 16.0", "task.params.seq_len: 16.0 is not allowed (an int)"),
    ("objectives: {accuracy: maximize, latency_ms: minimize}",
     "objectives: {accuracy: maximize}\nconstraints: {params: {max: .inf}}",
     "constraints.params.max: inf is not allowed (a number)"),
    ("dim: [16, 32]", "dim: [16, 10000000]", "arch.stages[0].dim: 10000000 is not allowed (too large for this machine"),
    ("depth: [1, 2]", "depth: [1, 1000000000000]", "arch.stages[0].depth: 1000000000000 is not allowed (too large"),
    ("batch_size: 16", "batch_size: 1000000000000", "train.batch_size: 1000000000000 is not allowed (too large"),
    ("repeats: 3", "repeats: 3, batch_size: 1000000000000000", "latency.batch_size: 1000000000000000 is not allowed"),
    ("repeats: 3", "repeats: 3, device: cuda", "latency.device: 'cuda' is not allowed here"),
    ("filter_dim: [8]", "filter_dim: [.inf]", "arch.stages[0].mixer.choices.hyena.filter_dim: inf is not allowed (an int"),
]


@pytest.mark.parametrize("old,new,fragment", SETTINGS, ids=[s[2].split(":")[0] for s in SETTINGS])
def test_setting_out_of_range_is_one_line(tmp_path, monkeypatch, capsys, old, new, fragment):
    if "'cuda'" in fragment:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is there: latency.device cuda is allowed")
    monkeypatch.chdir(tmp_path)
    text = TINY_SPACE % {"steps": 5}
    assert old in text
    p = write_space(tmp_path, text=text.replace(old, new, 1))
    _refused(["search", "--space", p, "--study", "x", "--trials", 1], capsys, tmp_path, f"{p}: {fragment}")


@pytest.mark.parametrize("kind,fragment", [
    ("binary", "is a binary file, not a YAML space file"),
    ("latin-1", "is not UTF-8 text (byte 0xe9 at offset"),
    ("utf-16", "is a binary file"),  # UTF-16 text holds NUL bytes
    ("directory", "is a directory, not a space file"),
    ("missing", "no such file"),
    ("empty", "a space file must be a YAML mapping"),
    ("list", "a space file must be a YAML mapping"),
    ("huge int", "invalid YAML: Exceeds the limit"),
    ("tab", "invalid YAML"),
    ("python tag", "invalid YAML: could not determine a constructor"),
])
def test_unreadable_space_file_is_one_line(tmp_path, monkeypatch, capsys, kind, fragment):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "bad.yaml"
    good = (TINY_SPACE % {"steps": 5}).replace("name: e2e", "name: café")
    content = {"binary": bytes(range(256)), "latin-1": good.encode("latin-1"), "utf-16": good.encode("utf-16"),
               "empty": b"", "list": b"- 1\n- 2\n", "huge int": b"trials: " + b"9" * 5000 + b"\n",
               "tab": b"name:\n\t- x\n", "python tag": b"name: !!python/object/apply:os.system ['true']\n"}.get(kind)
    if kind == "directory":
        p.mkdir()
    elif content is not None:
        p.write_bytes(content)
    _refused(["search", "--space", p, "--study", "x"], capsys, tmp_path, str(p), fragment)


@pytest.mark.parametrize("argv,fragment", [
    (["search", "--trials", "0"], "'--trials': 0 is not allowed (an int in [1, 1000000000])"),
    # not blamed on --seed: the bound leaves every seed up to 2**32 - 1 - 10**9 valid
    (["search", "--trials", "1000000000000"], "'--trials': 1000000000000 is not allowed (an int in [1, 1000000000])"),
    (["search", "--workers", "0"], "'--workers': 0 is not allowed (an int >= 1)"),
    (["search", "--timeout", "0"], "'--timeout': 0.0 is not allowed (a number > 0)"),
    (["search", "--timeout", "nan"], "'--timeout': nan is not allowed"),
    (["search", "--heartbeat", "0"], "'--heartbeat': 0 is not allowed (an int >= 1)"),
    (["search", "--cpus-per-trial", "0"], "'--cpus-per-trial': 0.0 is not allowed (a number > 0)"),
    (["search", "--gpus-per-trial", "-1"], "'--gpus-per-trial': -1.0 is not allowed (a number >= 0)"),
    (["resume", "--study", "x", "--trials", "0"], "'--trials': 0 is not allowed"),
    (["resume", "--study", "x", "--timeout", "-5"], "'--timeout': -5.0 is not allowed"),
    (["fidelity", "--space", "tiny", "--n", "2"], "'--n': 2 is not allowed (an int >= 3)"),
    (["fidelity", "--space", "tiny", "--steps", "0"], "'--steps': 0 is not allowed (an int >= 1)"),
    (["fidelity", "--space", "tiny", "--bootstrap", "-1"], "'--bootstrap': -1 is not allowed (an int >= 0)"),
])
def test_option_out_of_range_is_one_line(tmp_path, monkeypatch, capsys, argv, fragment):
    monkeypatch.chdir(tmp_path)
    _refused(argv, capsys, tmp_path, fragment)


def test_option_ranges_are_shown_in_help(capsys):
    from nas.cli import main

    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(an int >= 1)" in text and "(a number > 0)" in text


def test_dry_run_checks_everything_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    p = write_space(tmp_path)
    code, out, err = _nas(["search", "--space", p, "--study", "d", "--trials", 2, "--dry-run"], capsys)
    assert code == 0, err
    assert err.startswith(f"ok: space {p} (task mqar, 24 architectures), study d in sqlite:///results/d.db, 2 trials")
    assert sorted(tmp_path.rglob("*")) == [p]


@pytest.mark.parametrize("args,fragment", [
    (["--seed", 2**32 - 2], "--seed: 4294967294 is out of range; with --trials 2"),
    (["--storage", "sqlite://"], "an in-memory SQLite database keeps nothing"),
    (["--storage", "redis://host/0"], "scheme 'redis' is not one of sqlite, postgresql, mysql"),
    (["--storage", "sqlite:///{tmp}"], "is a directory"),
    (["--storage", "sqlite:///{tmp}/space.yaml/x.db"], "space.yaml is a file, not a folder"),
], ids=["seed", "in-memory", "scheme", "directory", "file-as-folder"])
def test_dry_run_runs_the_seed_and_storage_checks(tmp_path, monkeypatch, capsys, args, fragment):
    monkeypatch.chdir(tmp_path)
    p = write_space(tmp_path)
    args = [str(a).replace("{tmp}", str(tmp_path)) for a in args]
    _refused(["search", "--space", p, "--study", "d", "--trials", 2, "--dry-run", *args], capsys, tmp_path, fragment)


def test_dry_run_checks_an_existing_study_and_changes_nothing(tmp_path, monkeypatch, capsys):
    from nas.api import plan_search
    from nas.store.optuna_access import engine
    from nas.store.study import create_or_load_study

    monkeypatch.chdir(tmp_path)
    p, other = write_space(tmp_path), write_space(tmp_path, steps=7, name="other.yaml")
    url = f"sqlite:///{tmp_path}/s.db"
    study, _, _ = create_or_load_study(plan_search(str(p), study="s", storage=url).config)
    engine(study).dispose()  # its connections closed: the database is all in s.db
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    _refused(["search", "--space", other, "--study", "s", "--storage", url, "--dry-run"], capsys, tmp_path,
             f"study 's' in {url} was made with space {str(p)!r}, which differs from {str(other)!r}")
    code, out, err = _nas(["search", "--space", p, "--study", "s", "--storage", url, "--dry-run"], capsys)
    assert code == 0 and err.startswith(f"ok: space {p}"), err
    code, out, err = _nas(["search", "--space", other, "--study", "new", "--storage", url, "--dry-run"], capsys)
    assert code == 0, err  # another study in the same database
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before


# ------------------------------------------------------------------ memory: lower bounds
@pytest.fixture(scope="module")
def fit():
    from evaluators import fit

    return fit


def _registry_cases():
    import search_spaces

    for name in search_spaces.list_mixers():
        info = search_spaces.get_mixer_info(name)
        for causal in (True, False) if info.causal else (False,):
            for grid in (False, True):
                if (info.needs_2d and not grid) or (causal and grid):
                    continue
                yield pytest.param(name, causal, grid, id=f"{name}-{'causal' if causal else 'bi'}-{'2d' if grid else '1d'}")


@pytest.mark.parametrize("name,causal,grid", list(_registry_cases()))
def test_meta_build_counts_the_real_parameters(fit, name, causal, grid):
    """The fit check builds mixers on the meta device; its counts are those of a real build."""
    import search_spaces

    cls = search_spaces.get_mixer(name)
    layout = {"grid": grid} if cls.grid_aware else {}
    real = sum(p.numel() for p in cls(48, causal=causal, **layout).parameters())
    assert fit.mixer_params(name, 48, causal, grid, ()) == real


@pytest.mark.parametrize("space_name", ["tiny", "vision-hier", "wide-vs-deep"])
def test_space_floor_is_a_lower_bound(fit, space_name):
    """No model sampled from a built-in space has fewer parameters than the floor, and the floor is
    tight enough to mean something (within 4x of the smallest one sampled)."""
    import optuna

    import search_spaces
    from evaluators.cost import count_params
    from nas.engine.config import load_space_checked

    space = load_space_checked(space_name)
    floor = fit.space_floor(space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    counts = []
    for _ in range(12):
        t = study.ask()
        counts.append(count_params(search_spaces.build_model(search_spaces.sample(space, t), space.io)))
        study.tell(t, 0.0)
    assert 0 < floor <= min(counts) < 4 * floor, (floor, sorted(counts))


def test_check_fits_refuses_only_what_cannot_fit(fit, tmp_path):
    from evaluators.latency import LatencyConfig
    from evaluators.train import TrainConfig
    from nas.engine.config import load_space_checked

    space = load_space_checked(str(write_space(tmp_path)))
    floors = fit.stage_floors(space, 0)
    need16 = min(p for (d, _), p in floors.items() if d == 16) * fit.TRAIN_BYTES_PER_PARAM
    need32 = min(p for (d, _), p in floors.items() if d == 32) * fit.TRAIN_BYTES_PER_PARAM
    assert need16 < need32
    train, latency = TrainConfig(batch_size=1), LatencyConfig()
    fit.check_fits(space, train, latency, available=need32 + 16 * 32 * 4)  # dim 32 fits, just
    fit.check_fits(space, train, latency, available=None)  # unknown: not checked
    with pytest.raises(SettingError, match=r"arch.stages\[0\].dim: 32 is not allowed \(too large"):
        fit.check_fits(space, train, latency, available=need32 - 1)
    with pytest.raises(SettingError, match=r"arch.stages\[0\].dim: 16 is not allowed"):
        fit.check_fits(space, train, latency, available=need16 - 1)


def test_resume_checks_this_machine_before_writing(tmp_path, monkeypatch, capsys):
    """A study resumed on a machine that cannot hold its models is refused before anything is written."""
    import nas
    from evaluators import fit

    monkeypatch.chdir(tmp_path)
    p = write_space(tmp_path, steps=2)
    code, _, err = _nas(["search", "--space", p, "--study", "r", "--trials", 1], capsys)
    assert code == 0, err
    db = tmp_path / "results" / "r.db"
    before = db.stat().st_mtime_ns
    monkeypatch.setattr(fit, "available_memory", lambda: 1024)  # 1 KiB: no model fits
    _refused(["resume", "--study", "r", "--trials", 2], capsys, tmp_path, "arch.stages[0].dim: 16 is not allowed")
    assert db.stat().st_mtime_ns == before
    assert len(nas.load_trials(f"sqlite:///{db}", "r")) == 1
