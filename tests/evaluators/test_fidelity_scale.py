"""`nas fidelity --scale`: the same architectures trained bigger, and how each proxy's ranking transfers."""

import numpy as np
import pandas as pd
import pytest

import evaluators.fidelity as fidelity
import evaluators.fidelity_scale as fidelity_scale
from evaluators.fidelity import PROXIES, FidelityConfig, reference_seed, run_fidelity
from evaluators.fidelity_scale import parse_scale, scale_correlations, scale_markdown
from evaluators.train import TrainResult
from search_spaces.schema import SettingError
from tests.cli_helpers import TINY_SPACE, assert_one_line_error, load_space_text, write_space
from tests.cli_helpers import invoke as run_nas
from tests.cli_helpers import run_nas as run_nas_process


def test_parse_scale_reads_profile_factors_and_steps():
    s = parse_scale("dim=4x, depth=2X,steps=4")
    assert (s.scale.dim, s.scale.depth, s.scale.heads, s.steps) == (4, 2, "scale", 4)
    assert s.label == "dim=4x,depth=2x,steps=4x"
    assert parse_scale("steps=2x").scale.identity and parse_scale("dim=2x,heads=keep").scale.heads == "keep"


@pytest.mark.parametrize("text, where", [
    ("dim=0x", "--scale.dim"), ("dim=1.5x", "--scale.dim"), ("width=2x", "--scale.width"), ("dim", "--scale"),
    ("", "--scale"), ("steps=0", "--scale.steps"), ("dim=2x,dim=3x", "--scale.dim"), ("heads=all", "--scale.heads"),
    ("dim=1x,steps=1x", "--scale"),
])
def test_bad_scale_names_its_key(text, where):
    with pytest.raises(SettingError) as e:
        parse_scale(text)
    assert e.value.path == where


def _params_at(monkeypatch, text: str, n: int = 4):
    """run_fidelity at one scale with the trainings replaced: (rows, the steps each scaled run got)."""
    steps = []

    def fake_train(model, task, cfg, *, seed=0, on_step=None):
        return TrainResult(0.5, 1.0, 1.0, cfg.steps, 0.0, 1.0)

    def fake_scaled(model, task, cfg, *, seed=0, on_step=None):
        steps.append(cfg.steps)
        return TrainResult(0.5, 1.0, 1.0, cfg.steps, 0.0, 1.0)

    monkeypatch.setattr(fidelity, "train_proxy", fake_train)
    monkeypatch.setattr(fidelity_scale, "train_proxy", fake_scaled)
    space = load_space_text(TINY_SPACE % {"steps": 2})
    df = run_fidelity(space, FidelityConfig(n=n, seed=0, bootstrap=0, scales=(parse_scale(text),)))
    assert "error" not in df and "scaled0_error" not in df
    return df, steps


def test_scaled_models_grow_as_the_scale_says(monkeypatch):
    df, steps = _params_at(monkeypatch, "steps=3x")
    assert (df["scaled0_params"] == df["params"]).all() and steps == [6] * 4  # same model, 3x the 2 short steps
    df, _ = _params_at(monkeypatch, "depth=2x")
    ratio = df["scaled0_params"] / df["params"]
    assert ((ratio > 1.2) & (ratio < 2)).all()  # the blocks doubled, the embedding and head did not
    df, _ = _params_at(monkeypatch, "dim=2x,depth=2x")
    ratio = df["scaled0_params"] / df["params"]
    assert (ratio > 3).all()  # blocks 2x wide (4x weights) and 2x deep; embedding and head 2x


def test_scaled_training_has_its_own_seed():
    assert fidelity_scale.scaled_seed(0, 2, 0) == reference_seed(0, 2) not in (0, reference_seed(0, 0),
                                                                                  reference_seed(0, 1))


def test_transfer_report_has_every_proxy_overall_and_per_family():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=8)
    df = pd.DataFrame({"family": ["attention"] * 4 + ["hyena"] * 4, "short_accuracy": ref, "reference_accuracy": ref,
                       "synflow": rng.normal(size=8), "params": np.arange(1, 9.0), "scaled0_params": 4 * np.arange(1, 9.0),
                       "scaled0_accuracy": ref + 0.01 * rng.normal(size=8)})
    scales = (parse_scale("dim=4x,steps=2x"),)
    corr = scale_correlations(df, scales, bootstrap=50)
    assert set(corr.scale) == {"dim=4x,depth=1x,steps=2x"} and set(corr.group) == {"all", "attention", "hyena"}
    assert {"short_accuracy", "synflow", "params", "reference_accuracy"} <= set(corr.proxy) <= set(PROXIES) | {
        "reference_accuracy"}
    md = "\n".join(scale_markdown(df, corr, scales, short_steps=100))
    assert "### scale dim=4x,depth=1x,steps=2x" in md and "200 steps" in md and "4.0x the proxy's" in md
    row = next(line for line in md.splitlines() if line.startswith("| short_accuracy |"))
    assert row.count("[") == 3  # tau with its interval: all, attention, hyena


def test_bad_scale_is_a_one_line_error(tmp_path):
    space = write_space(tmp_path)
    r = run_nas_process("fidelity", "--space", space, "--n", 4, "--scale", "dim=2x,width=3x", cwd=tmp_path)
    assert_one_line_error(r, "--scale.width")


def test_scale_goes_without_latency(tmp_path):
    space = write_space(tmp_path)
    r = run_nas("fidelity", "--space", space, "--n", 4, "--latency", "--scale", "dim=2x", cwd=tmp_path)
    assert r.returncode == 2 and "--scale goes without --latency" in r.stderr


@pytest.mark.slow
def test_cli_scale_end_to_end(tmp_path):
    space = write_space(tmp_path)
    out = tmp_path / "fid"
    r = run_nas("fidelity", "--space", space, "--n", 4, "--steps", 2, "--reference-steps", 3, "--bootstrap", 20,
                "--scale", "dim=2x,steps=2x", "--out", out, cwd=tmp_path, check=True)
    df = pd.read_csv(out / "archs.csv")
    assert df["scaled0_accuracy"].notna().all() and (df["scaled0_params"] > df["params"]).all()
    corr = pd.read_csv(out / "scale.csv")
    assert set(corr.scale) == {"dim=2x,depth=1x,steps=2x"} and "short_accuracy" in set(corr.proxy)
    assert "rank transfer to scale dim=2x,depth=1x,steps=2x:" in r.stdout
    assert "## Rank transfer across scale" in (out / "fidelity.md").read_text()
