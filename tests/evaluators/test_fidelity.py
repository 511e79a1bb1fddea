"""`nas fidelity`: rank correlations (sign-corrected, bootstrapped) and the end-to-end report."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

import evaluators.fidelity as fidelity
from evaluators.fidelity import (
    PROXIES,
    SEED_AGREEMENT,
    FidelityConfig,
    correlations,
    rank_correlation,
    reference_seed,
    run_fidelity,
    to_markdown,
    verdict,
)
from evaluators.train import TrainResult
from tests.cli_helpers import TINY_SPACE, assert_one_line_error, load_space_text, write_space
from tests.cli_helpers import invoke as run_nas
from tests.cli_helpers import run_nas as run_nas_process


def test_rank_correlation_matches_scipy_and_ci_contains_estimate():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=30)
    proxy = ref + rng.normal(scale=0.7, size=30)
    r = rank_correlation(proxy, ref, bootstrap=300, seed=0)
    assert r["tau"] == pytest.approx(stats.kendalltau(proxy, ref).statistic)
    assert r["rho"] == pytest.approx(stats.spearmanr(proxy, ref).statistic)
    assert r["tau_lo"] <= r["tau"] <= r["tau_hi"] and r["rho_lo"] <= r["rho"] <= r["rho_hi"]


def test_lower_is_better_proxies_are_sign_corrected_and_families_split():
    ref = np.arange(8, dtype=float)
    df = pd.DataFrame({"reference_accuracy": ref, "train_loss_sum": -ref * 3, "short_accuracy": ref,
                       "family": ["attention"] * 4 + ["hyena"] * 4})
    c = correlations(df, bootstrap=50)
    row = c[(c.proxy == "train_loss_sum") & (c.group == "all")].iloc[0]
    assert PROXIES["train_loss_sum"] == -1 and row["sign_corrected"] and row["tau"] == pytest.approx(1.0)
    assert set(c.group) == {"all", "attention", "hyena"}


def test_seed_agreement_row_ranks_one_reference_seed_by_the_other():
    s0 = np.arange(8, dtype=float)
    s1 = s0[::-1].copy()  # the seeds disagree completely
    df = pd.DataFrame({"reference_accuracy": (s0 + s1) / 2 + s0 * 1e-3, "reference_accuracy_seed0": s0,
                       "reference_accuracy_seed1": s1, "short_accuracy": s0, "family": ["attention"] * 8})
    c = correlations(df, bootstrap=20)
    row = c[(c.proxy == SEED_AGREEMENT) & (c.group == "all")].iloc[0]
    assert row["tau"] == pytest.approx(-1.0)


def _recording_training(monkeypatch):
    """Replace the trainings of evaluators.fidelity by a recorder of (seed, first batch, initial
    weights); each returns a made-up result at once."""
    calls = []

    def fake_train(model, task, cfg, *, seed=0, on_step=None):
        first_batch = torch.randint(0, len(task.split("train")[0]), (cfg.batch_size,),
                                    generator=torch.Generator().manual_seed(seed))  # as TrainLoop draws it
        weights = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        calls.append({"seed": seed, "steps": cfg.steps, "batch": first_batch, "weights": weights})
        return TrainResult(0.5, 1.0, 1.0, cfg.steps, 0.0, 1.0)

    monkeypatch.setattr(fidelity, "train_proxy", fake_train)
    return calls


def test_references_share_neither_initialisation_nor_batch_order_with_the_proxy(monkeypatch):
    calls = _recording_training(monkeypatch)
    space = load_space_text(TINY_SPACE % {"steps": 2})
    df = run_fidelity(space, FidelityConfig(n=1, seed=3, bootstrap=0))
    proxy, ref0, ref1 = calls  # the short training, then the two reference seeds (the default)
    assert proxy["seed"] == 3 and [ref0["seed"], ref1["seed"]] == [reference_seed(3, 0), reference_seed(3, 1)]
    assert len({c["seed"] for c in calls}) == 3
    assert not torch.equal(proxy["batch"], ref0["batch"]) and not torch.equal(ref0["batch"], ref1["batch"])
    assert not torch.allclose(proxy["weights"], ref0["weights"]) and not torch.allclose(ref0["weights"], ref1["weights"])
    assert df.attrs["reference_seeds"] == 2 and df.attrs["reference_seed_values"] == [ref0["seed"], ref1["seed"]]
    with pytest.raises(ValueError, match="noise ceiling"):  # one reference seed cannot give the ceiling
        run_fidelity(space, FidelityConfig(n=1, reference_seeds=1))


def test_verdict_is_judged_on_the_lower_end_of_the_interval():
    assert verdict(0.61, 0.6) == "yes" and verdict(0.59, 0.6) == "no" and verdict(float("nan"), 0.6) == "n/a"
    df = pd.DataFrame({"family": ["attention"] * 3})
    df.attrs.update(reference_seeds=2, reference_seed_values=[1000, 2000])
    corr = pd.DataFrame([  # hand-made: one proxy above 0.6 whose interval reaches below it, one that holds
        {"proxy": "short_accuracy", "group": "all", "sign_corrected": False, "n": 20, "tau": 0.71, "tau_lo": 0.47,
         "tau_hi": 0.90, "rho": 0.8, "rho_lo": 0.6, "rho_hi": 0.95},
        {"proxy": "synflow", "group": "all", "sign_corrected": False, "n": 20, "tau": 0.80, "tau_lo": 0.65,
         "tau_hi": 0.92, "rho": 0.9, "rho_lo": 0.8, "rho_hi": 0.97},
        {"proxy": SEED_AGREEMENT, "group": "all", "sign_corrected": False, "n": 20, "tau": 0.60, "tau_lo": 0.31,
         "tau_hi": 0.82, "rho": 0.7, "rho_lo": 0.4, "rho_hi": 0.9}])
    md = to_markdown(df, corr, target=0.6)
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert rows["short_accuracy"].rstrip(" |").endswith("no") and rows["synflow"].rstrip(" |").endswith("yes")
    # the noise ceiling, with its interval, beside each tau
    assert "+0.71 [+0.47, +0.90] | +0.60 [+0.31, +0.82]" in rows["short_accuracy"]
    assert "+0.80 [+0.65, +0.92] | +0.60 [+0.31, +0.82]" in rows["synflow"]
    assert "none shared with the proxy" in md and "seeds 1000, 2000" in md


def test_reference_seeds_below_two_is_a_one_line_error(tmp_path):
    space = write_space(tmp_path)
    r = run_nas_process("fidelity", "--space", space, "--n", 4, "--reference-seeds", 1, cwd=tmp_path)
    assert_one_line_error(r, "--reference-seeds")


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    space = write_space(tmp_path)
    out = tmp_path / "fid"
    r = run_nas("fidelity", "--space", space, "--n", 4, "--steps", 2, "--reference-steps", 3, "--bootstrap", 50,
                "--reference-seeds", 2, "--out", out, cwd=tmp_path, check=True)
    assert r.stderr.count("/4] ") == 4  # one progress line per architecture
    df = pd.read_csv(out / "archs.csv")
    assert len(df) == 4 and df["reference_accuracy"].notna().all()
    for col in ("synflow", "naswot", "jacob_cov", "snip", "grad_norm", "params", "flops", "short_accuracy",
                "short_test_loss", "train_loss_sum", "family", "reference_loss"):
        assert col in df.columns
    # two reference seeds: the reference is their mean, and their agreement is reported
    assert np.allclose(df["reference_accuracy"], (df["reference_accuracy_seed0"] + df["reference_accuracy_seed1"]) / 2)
    corr = pd.read_csv(out / "correlations.csv")
    assert set(PROXIES) | {SEED_AGREEMENT} <= set(corr.proxy)
    md = (out / "fidelity.md").read_text()
    assert "Kendall tau" in md and "sign-corrected" in md and "machine:" in md and "noise ceiling" in md
    # the noise ceiling is printed, with its interval, beside each tau
    assert "noise ceiling (reference seed 1 ranks seed 0): tau " in r.stdout
    tau_lines = [line for line in r.stdout.splitlines() if line.startswith("short_accuracy ")]
    assert len(tau_lines) == 1 and " ceiling " in tau_lines[0] and "meets tau >= 0.6: " in tau_lines[0]
    bad = run_nas_process("fidelity", "--space", space, "--n", 1, cwd=tmp_path)  # the real script's usage errors
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: ") and "--n" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
