"""Rank the proxies of a `nas fidelity` run against the reference's bits per byte (text tasks).

    python benchmarks/fidelity_bpb.py results/fidelity-text-lm/archs.csv

`nas fidelity` ranks every proxy against the reference training's accuracy (for the `text` task:
next-byte accuracy on the validation split). A language model is judged by its loss, so this
script re-ranks the same rows against the reference's bits per byte, ``reference_loss / ln 2``
(lower is better, so the reference is sign-corrected like the loss proxies), and prints the
markdown table: Kendall tau and Spearman rho with percentile-bootstrap 95% intervals. Nothing is
trained; the numbers come from the ``archs.csv`` that `nas fidelity --out DIR` wrote.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import _repo_path  # noqa: F401  (repository root first on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archs", type=Path, help="archs.csv written by nas fidelity")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import pandas as pd

    from evaluators.fidelity import correlations

    df = pd.read_csv(args.archs)
    if "reference_loss" not in df:
        raise SystemExit(f"error: {args.archs} has no reference_loss column (not written by nas fidelity)")
    ok = df[df["reference_loss"].notna()].copy()
    # correlations() ranks every proxy against reference_accuracy: put -bits per byte there
    ok["reference_accuracy"] = -ok["reference_loss"] / math.log(2)
    ok = ok.drop(columns=[c for c in ok if c.startswith("reference_accuracy_seed")])
    corr = correlations(ok, bootstrap=args.bootstrap, seed=args.seed)
    corr = corr[corr["group"] == "all"].sort_values("tau", ascending=False)
    print(f"{len(ok)} architectures; reference: bits per byte of the reference training (lower is better), "
          f"{args.bootstrap} bootstrap resamples.\n")
    print("| proxy | orientation | Kendall tau [95% CI] | Spearman rho [95% CI] |")
    print("|---|---|---|---|")
    for _, r in corr.iterrows():
        orient = "lower is better (sign-corrected)" if r["sign_corrected"] else "higher is better"
        print(f"| {r['proxy']} | {orient} | {r['tau']:+.2f} [{r['tau_lo']:+.2f}, {r['tau_hi']:+.2f}] "
              f"| {r['rho']:+.2f} [{r['rho_lo']:+.2f}, {r['rho_hi']:+.2f}] |")
    bpb = ok["reference_accuracy"].abs()
    print(f"\nreference bits per byte: {bpb.min():.3f} to {bpb.max():.3f} (median {bpb.median():.3f})")


if __name__ == "__main__":
    main()
