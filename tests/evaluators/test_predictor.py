"""The latency predictor (issue 18): block latency tables, the predict rung, measure: predict,
`nas profile` and `nas fidelity --latency`.

The prediction is checked against the table's own rows read back with sqlite3 and summed by hand
over the model's composition; table entries never cross environments; screening stops a candidate
before any training step; agreement statistics against a brute-force count of concordant pairs.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import evaluators.predictor as predictor_mod
from evaluators.block_parts import PartTiming, model_parts, time_parts
from evaluators.evaluation import EvalSettings, evaluate
from evaluators.ladder import LadderPruned
from evaluators.latency import LatencyConfig
from evaluators.latency_fidelity import agreement
from evaluators.predictor import MemoryTable, Predictor, environment_key, rechecked
from evaluators.profile_costs import ProfileRequest, measure_profile, task_profile
from evaluators.spaces import bind_task
from nas.store.latency_tables import TABLE_NAME, open_latency_table
from search_spaces.arch import ArchSpec, BlockSpec, FFNSpec, MixerSpec, StageSpec, StemSpec
from search_spaces.deploy_profiles import Profile, Scale
from search_spaces.schema import SettingError
from search_spaces.space import parse_space
from search_spaces.task_io import TaskIO
from tests.cli_helpers import TINY_SPACE, assert_one_line_error, invoke, write_space

IO = TaskIO("tokens", 32, seq_len=16, vocab_size=32, causal=True, per_token=True)
FAST = LatencyConfig(warmup=0, repeats=2, max_seconds=0.01, min_sample_ms=0)
LONG = Profile("long", seq_len=32, scale=Scale(dim=2))


def _arch(*blocks, dim=16):
    return ArchSpec(StemSpec(), (StageSpec(dim, tuple(BlockSpec(MixerSpec(t, p), FFNSpec("mlp", 2.0))
                                                       for t, p in blocks)),), causal=True).validate()


def _space(**top):
    raw = yaml.safe_load(TINY_SPACE % {"steps": 2})
    raw["latency"] = {"warmup": 0, "repeats": 2, "max_seconds": 0.01, "min_sample_ms": 0}
    raw.update(top)
    space = parse_space(raw, source="s.yaml")
    return bind_task(space)


# ------------------------------------------------------------------------------ tables and sums
def test_prediction_is_the_sum_of_the_stored_rows_over_the_models_parts(tmp_path):
    arch = _arch(("softmax", {"heads": 2}), ("linear", {"heads": 2}), ("softmax", {"heads": 2}))
    table = open_latency_table(f"sqlite:///{tmp_path}/t.db")
    pred = Predictor(table, FAST).predict(arch, IO, LONG)
    assert pred.timed == 4  # stem, two distinct blocks, readout: the repeated block is timed once

    rows = sqlite3.connect(tmp_path / "t.db").execute(f"SELECT part, median_ms FROM {TABLE_NAME}").fetchall()
    by_kind: dict = {}
    for part, ms in rows:
        d = json.loads(part)
        kind = d["part"] if d["part"] != "block" else d["block"]["mixer"]["type"]
        assert d["input"][0] == 1 and d["input"][1] == 32  # the profile's batch and length
        by_kind[kind] = ms
    assert sorted(by_kind) == ["linear", "readout", "softmax", "stem"]
    expected = by_kind["stem"] + 2 * by_kind["softmax"] + by_kind["linear"] + by_kind["readout"]
    assert pred.ms == pytest.approx(expected, rel=1e-12)

    again = Predictor(table, FAST, fill=False).predict(arch, IO, LONG)  # a second process: all from the table
    assert (again.timed, again.ms) == (0, pred.ms)


def test_part_keys_describe_what_each_part_sees_in_the_built_model():
    """Block inputs at a profile (width x2, depth x2, a downsampling stage on images) equal what the
    built model's parts receive (time_parts refuses keys that do not)."""
    arch = ArchSpec(StemSpec("patch2d", 4), (StageSpec(16, (BlockSpec(MixerSpec("softmax", {"heads": 2})),)),
                                             StageSpec(32, (BlockSpec(MixerSpec("local", {})),), "merge")))
    io = TaskIO("image", 10, image_size=(20, 20), in_channels=3)
    prof = Profile("p", image_size=(28, 36), batch_size=2, scale=Scale(dim=2, depth=2))
    parts = model_parts(arch, io, prof)
    assert [p.kind for p in parts] == ["stem", "block", "block", "transition", "block", "block", "readout"]
    assert [p.input_shape for p in parts[1:]] == [(2, 63, 32)] * 2 + [(2, 63, 32)] + [(2, 20, 64)] * 3
    assert set(time_parts(arch, io, prof, FAST)) == {p.key for p in parts}


def test_parts_are_timed_in_place_each_between_its_neighbours():
    """The chain timer gives each call the clock time between the previous call's end and its own
    (a fake clock that each call advances by a known cost), summed over k runs; a repeated part
    gets the mean of its occurrences."""
    import evaluators.block_parts as bp
    from evaluators.latency import WallClock, chain_timer, timed_rounds

    now = [0.0]
    clock = WallClock(lambda: now[0])
    costs = [1e-3, 2e-3, 3e-3, 5e-3]  # seconds
    calls = [(lambda c=c: now.__setitem__(0, now[0] + c)) for c in costs]
    once = chain_timer(calls, clock)
    assert once(2) == pytest.approx([2.0, 4.0, 6.0, 10.0])  # ms over two runs
    cfg = LatencyConfig(warmup=1, repeats=3, min_sample_ms=0)
    assert [t[:2] for t in timed_rounds(once, cfg, clock.now).each()] == [pytest.approx((c * 1e3, 0.0)) for c in costs]

    parts = [bp.Part("block", k) for k in ("a", "b", "a", "c")]  # "a" occurs twice: 1 and 3 ms
    timed = bp.time_in_place(parts, calls, {"a", "c"}, cfg, clock)
    assert set(timed) == {"a", "c"}
    assert timed["a"].median_ms == pytest.approx(2.0) and timed["c"].median_ms == pytest.approx(5.0)
    assert timed["a"].n == 2 * timed["c"].n  # the samples of both occurrences


def test_timing_parts_in_place_runs_them_in_forward_order(monkeypatch):
    """time_parts runs every part of the model in forward order (the warm-up and each sample),
    even when only one part is missing from the table, and times nothing else."""
    import evaluators.block_parts as bp

    arch = _arch(("softmax", {"heads": 2}), ("linear", {"heads": 2}))
    parts = model_parts(arch, IO, LONG)
    order = []
    real = bp.part_calls

    def recording(model, x):
        calls, shapes = real(model, x)
        return [(lambda i=i, c=c: (order.append(i), c())[1]) for i, c in enumerate(calls)], shapes

    monkeypatch.setattr(bp, "part_calls", recording)
    timed = time_parts(arch, IO, LONG, replace(FAST, warmup=1), only={parts[2].key})
    assert set(timed) == {parts[2].key}
    n = len(parts)
    assert len(order) % n == 0 and order == list(range(n)) * (len(order) // n) and len(order) >= 3 * n


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_parts_timed_in_place_on_cuda_add_up_to_the_whole_model():
    """CUDA events between the parts: every part gets a positive time and their sum is near the
    whole model's event-timed forward (a loose bound: this checks the timer's bookkeeping)."""
    arch = _arch(("softmax", {"heads": 2}), ("linear", {"heads": 2}))
    prof = Profile("gpu", seq_len=256, device="cuda")
    cfg = LatencyConfig(warmup=2, repeats=10, max_seconds=1.0)
    timed = time_parts(arch, IO, prof, cfg)
    parts = model_parts(arch, IO, prof)
    assert set(timed) == {p.key for p in parts} and all(t.median_ms > 0 for t in timed.values())
    whole = measure_profile(arch, IO, ProfileRequest(prof, ("latency_ms",)), cfg)["latency_ms@gpu"]
    assert 0.5 < sum(timed[p.key].median_ms for p in parts) / whole < 2.0


def test_table_entries_are_kept_per_environment(tmp_path, monkeypatch):
    arch = _arch(("softmax", {"heads": 2}))
    table = MemoryTable()
    p = Predictor(table, FAST)
    assert p.predict(arch, IO, LONG).timed == 3
    assert p.predict(arch, IO, LONG).timed == 0
    assert p.predict(arch, IO, Profile("long", seq_len=32, scale=Scale(dim=2), threads=2)).timed == 3
    monkeypatch.setattr(predictor_mod, "cpu_model", lambda: "another CPU")
    assert p.predict(arch, IO, LONG).timed == 3  # same part, another machine: timed again
    envs = {env for _, env in table.entries}
    assert len(envs) == 3 and len(table.entries) == 9
    monkeypatch.undo()
    assert p.predict(arch, IO, LONG).timed == 0
    # a profile's name and how it obtains latency do not change what is measured
    assert LONG.key() == replace(LONG, name="other", measure="predict", recheck=1.0).key()


def test_the_first_timing_of_a_key_stands(tmp_path):
    table = open_latency_table(f"sqlite:///{tmp_path}/t.db")
    env = environment_key(LONG)
    k, j, absent = (json.dumps({"part": "block", "input": [1, n, 8]}) for n in (1, 2, 3))
    table.store(env, {k: PartTiming(1.0, 0.1, 5)})
    table.store(env, {k: PartTiming(9.0, 0.1, 5), j: PartTiming(2.0, 0.0, 3)})
    assert table.lookup(env, [k, j, absent]) == {k: PartTiming(1.0, 0.1, 5), j: PartTiming(2.0, 0.0, 3)}
    assert table.lookup(environment_key(Profile(threads=3)), [k]) == {} and table.count() == 2


# ------------------------------------------------------------------------------ the predict rung
def test_predict_rung_stops_a_candidate_predicted_over_its_bound_before_training(monkeypatch):
    space = _space(deploy={"long": {"seq_len": 32, "scale": {"dim": "2x"}}},
                   ladder=[{"rung": "predict", "max": {"latency_ms@long": 1e-9}}])
    monkeypatch.setattr("evaluators.evaluation.ProxyTraining", lambda *a, **k: pytest.fail("trained"))
    steps = []
    with pytest.raises(LadderPruned, match=r"predicted latency_ms@long [0-9.e+-]+ > max 1e-09") as e:
        evaluate(_arch(("softmax", {"heads": 2})), EvalSettings.from_space(space), on_step=lambda s, l: steps.append(s))
    assert steps == [] and e.value.rung == "predict" and e.value.values["latency_ms@long.predicted"] > 0
    monkeypatch.undo()

    space = _space(deploy={"long": {"seq_len": 32}}, ladder=[{"rung": "predict"}],
                   constraints={"latency_ms@long": {"max": 1e9}})  # bounds from the constraint
    settings = EvalSettings.from_space(space)
    assert settings.ladder[0].max == {"latency_ms@long": 1e9}
    metrics = evaluate(_arch(("softmax", {"heads": 2})), settings)
    assert metrics["ladder_passed"] == ["predict", "train"] and metrics["latency_ms@long.predicted"] > 0


@pytest.mark.parametrize("rung, fragment", [
    ({"rung": "predict"}, "a predict rung needs max or min bounds on ['latency_ms', 'latency_ms@long']"),
    ({"rung": "predict", "max": {"flops@long": 1}}, "ladder[0].max"),
    ({"rung": "predict", "max": {"latency_ms@wide": 1}}, "ladder[0].max"),
])
def test_a_bad_predict_rung_names_where(rung, fragment):
    with pytest.raises(SettingError) as e:
        EvalSettings.from_space(_space(deploy={"long": {"seq_len": 32}}, ladder=[rung]))
    assert fragment in str(e.value)


# ------------------------------------------------------------------------------ measure: predict
def test_measure_predict_makes_the_prediction_the_objective_and_rechecks_a_sample(monkeypatch):
    import evaluators.profile_costs as profiles_mod

    timed = []
    real = profiles_mod.measure_profile
    monkeypatch.setattr("evaluators.evaluation.measure_profile_here",
                        lambda arch, io, request, *a, **k: timed.append(request.metrics) or real(arch, io, request, *a, **k))
    arch = _arch(("softmax", {"heads": 2}))
    objectives = {"accuracy": "maximize", "latency_ms@long": "minimize"}
    space = _space(deploy={"long": {"seq_len": 32, "measure": "predict", "recheck": 0.0}}, objectives=objectives)
    m = evaluate(arch, EvalSettings.from_space(space))
    assert m["latency_ms@long"] == m["latency_ms@long.predicted"] > 0
    assert "latency_ms@long.measured" not in m and all("latency_ms" not in t for t in timed)  # never timed whole

    timed.clear()
    space = _space(deploy={"long": {"seq_len": 32, "measure": "predict", "recheck": 1.0}}, objectives=objectives)
    m = evaluate(arch, EvalSettings.from_space(space))
    assert ("latency_ms",) in timed and m["latency_ms@long.measured"] > 0
    assert m["latency_ms@long.rel_error"] == pytest.approx(m["latency_ms@long"] / m["latency_ms@long.measured"] - 1)


def test_the_recheck_sample_is_a_hash_fraction_of_architectures():
    archs = [_arch(("softmax", {"heads": h}), dim=d) for h in (1, 2, 4) for d in (16, 32, 64, 128)]
    assert not any(rechecked(a, 0.0) for a in archs) and all(rechecked(a, 1.0) for a in archs)
    half = [rechecked(a, 0.5) for a in archs]
    assert half == [int(a.arch_id, 16) < 16 ** 12 // 2 for a in archs] and 0 < sum(half) < len(archs)


def test_a_bad_measure_setting_is_one_line(tmp_path):
    text = TINY_SPACE % {"steps": 2} + "deploy:\n  long: {seq_len: 32, measure: guess}\n"
    r = invoke("search", "--space", write_space(tmp_path, text=text), "--study", "s", "--dry-run", cwd=tmp_path)
    assert_one_line_error(r, "deploy.long.measure", "guess", "time", "predict")


# ------------------------------------------------------------------------------ agreement statistics
def test_agreement_matches_a_brute_force_count():
    rng = np.random.default_rng(0)
    meas = rng.uniform(1, 10, 9)
    pred = meas * rng.uniform(0.7, 1.3, 9)
    df = pd.DataFrame({"profile": "p", "family": ["a"] * 5 + ["b"] * 4, "predicted": pred, "measured": meas})
    r = agreement(df, min_family=5)
    assert list(r["group"]) == ["all", "a"]
    pairs = [(i, j) for i in range(9) for j in range(i + 1, 9)]
    conc = sum(np.sign(pred[i] - pred[j]) == np.sign(meas[i] - meas[j]) for i, j in pairs)
    assert r["tau"][0] == pytest.approx((2 * conc - len(pairs)) / len(pairs))  # no ties: tau-b = tau-a
    err = sorted(abs(p - m) / m for p, m in zip(pred, meas))
    assert r["rel_err_median"][0] == pytest.approx(err[4])


# ------------------------------------------------------------------------------ CLI
def test_nas_profile_fills_the_table_and_fidelity_reads_it(tmp_path):
    text = (TINY_SPACE % {"steps": 2}).replace("max_seconds: 0.2", "max_seconds: 0.01, min_sample_ms: 0") \
        + "deploy:\n  long: {seq_len: 32}\n"
    sp = write_space(tmp_path, text=text)
    url = f"sqlite:///{tmp_path}/t.db"
    r = invoke("profile", "--space", sp, "--profile", "long", "--n", "2", "--storage", url, cwd=tmp_path, check=True)
    (n,) = sqlite3.connect(tmp_path / "t.db").execute(f"SELECT count(*) FROM {TABLE_NAME}").fetchone()
    assert n >= 3 and f"the table holds {n} parts" in r.stdout and "[long 2/2]" in r.stderr
    assert {row[0] for row in sqlite3.connect(tmp_path / "t.db").execute(f"SELECT profile FROM {TABLE_NAME}")} == {"long"}

    r = invoke("fidelity", "--space", sp, "--latency", "--n", "3", "--profile", "long", "--storage", url,
               "--out", tmp_path / "f", cwd=tmp_path, check=True)
    assert "long" in r.stdout and "tau" in r.stdout and (tmp_path / "f" / "latency.md").exists()
    rows = pd.read_csv(tmp_path / "f" / "latency.csv")
    assert len(rows) == 3 and rows["parts_timed"].iloc[:2].sum() == 0  # the first two came from `nas profile`


def test_an_architecture_too_large_at_a_profile_is_skipped_by_nas_profile_and_left_out_by_fidelity(tmp_path, monkeypatch):
    """Given memory for some of the sampled architectures' models at the profile and not the
    others: those are never built; `nas profile` says it skipped them, `nas fidelity --latency`
    leaves them out of its rows, and both finish."""
    from evaluators import fit, model_memory
    from evaluators.fidelity import sample_archs
    from tests.cli_helpers import load_space_text

    text = (TINY_SPACE % {"steps": 2}).replace("max_seconds: 0.2", "max_seconds: 0.01, min_sample_ms: 0") \
        + "deploy:\n  long: {seq_len: 64, scale: {dim: 4x}}\n"
    sp = write_space(tmp_path, text=text)
    space = load_space_text(text)
    archs = sample_archs(space, 4, 0)  # what both commands sample (--n 4, seed 0)
    needs = {a.arch_id: model_memory.profile_need(a, space.io, space.profiles["long"]).bytes for a in archs}
    available = int((min(needs.values()) + max(needs.values())) / 2 / model_memory.PLANNED)
    too_large = {a for a, n in needs.items() if n > model_memory.PLANNED * available}
    assert 0 < len(too_large) < len(archs)
    monkeypatch.setenv(fit.MEMORY_ENV, str(available))
    r = invoke("profile", "--space", sp, "--profile", "long", "--n", "4", "--storage", f"sqlite:///{tmp_path}/t.db",
               cwd=tmp_path, check=True)
    skipped = {line.split()[2] for line in r.stderr.splitlines() if "skipped: profile long: too large for this" in line}
    assert skipped == too_large
    r = invoke("fidelity", "--space", sp, "--latency", "--n", "4", "--profile", "long", "--out", tmp_path / "f",
               cwd=tmp_path, check=True)
    assert set(pd.read_csv(tmp_path / "f" / "latency.csv").arch_id) == set(needs) - too_large
    assert all(f"{a} left out: profile long: too large for this machine" in r.stderr for a in too_large)


@pytest.mark.parametrize("args, fragments", [
    (["--profile", "wide", "--storage", "sqlite:///x.db"], ["--profile", "'wide'", "long"]),
    ([], ["--study", "--storage"]),
])
def test_nas_profile_user_errors_are_one_line(tmp_path, args, fragments):
    sp = write_space(tmp_path, text=TINY_SPACE % {"steps": 2} + "deploy:\n  long: {seq_len: 32}\n")
    r = invoke("profile", "--space", sp, "--n", "1", *args, cwd=tmp_path)
    assert_one_line_error(r, *fragments)
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "results").exists()


def test_task_profile_predictions_use_the_latency_section():
    space = _space()
    settings = EvalSettings.from_space(space)
    prof = task_profile(space.io, settings.latency)
    parts = model_parts(_arch(("softmax", {"heads": 2})), space.io, prof)
    assert parts[1].input_shape == (settings.latency.batch_size, space.io.seq_len, 16)


def test_ray_workers_reach_the_tables_where_they_can(tmp_path, monkeypatch):
    from nas.store.latency_tables import worker_url

    monkeypatch.chdir(tmp_path)
    assert worker_url("sqlite:///results/s.db", remote_workers=False) == f"sqlite:///{tmp_path}/results/s.db"
    assert worker_url("sqlite:///results/s.db", remote_workers=True) is None  # the file is on the driver's disk
    assert worker_url("postgresql://u@db/nas", remote_workers=True) == "postgresql://u@db/nas"
