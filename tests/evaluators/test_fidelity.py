"""`nas fidelity`: rank correlations (sign-corrected, bootstrapped) and the end-to-end report."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evaluators.fidelity import PROXIES, SEED_AGREEMENT, correlations, rank_correlation
from tests.cli_helpers import invoke as run_nas
from tests.cli_helpers import run_nas as run_nas_process
from tests.cli_helpers import write_space


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
    bad = run_nas_process("fidelity", "--space", space, "--n", 1, cwd=tmp_path)  # the real script's usage errors
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: ") and "--n" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
