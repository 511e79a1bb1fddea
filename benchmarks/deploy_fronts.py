"""Where cost is measured changes the front: seq-hybrid scored at the task's shape and at a long profile.

Two measurements, on this machine, one torch thread:

1. **Crossover lengths.** For each mixer of seq-hybrid's choices (first listed parameters), the
   profile's model of a one-block architecture (width 64 x ``--scale``, heads scaled as the
   profile does, no FFN: the FFN costs the same for every mixer, so it cannot move a crossover) is
   timed at lengths 128 .. ``--max-len``: the best of ``--calls`` rounds, each timing every mixer
   once in turn (the best, not the median, and interleaved, because the machine is shared). The crossover of a mixer is the shortest
   length from which on it is faster than softmax attention at every longer length measured,
   interpolated in log-log between the two lengths that bracket it.
2. **Fronts.** ``seq-hybrid`` searched with ``nas search`` (random sampler), every candidate scored
   at the task's shape (``latency_ms``) and at the profile ``long`` (``--long-len`` tokens, width x
   ``--scale``, ``latency_ms@long``). A random sampler's proposals do not depend on the objective
   values, so the two 2-D fronts (accuracy vs ``latency_ms``, accuracy vs ``latency_ms@long``) are
   those two searches with the same seed would return, at half the training. To fit the time
   budget of a shared 2-core machine the proxy trains ``--steps`` steps (the space says 200) and
   latency is timed with 1 warm-up and rounds of 3 (the space says 3 and 15); the arch section,
   task and search space are seq-hybrid's.

Writes ``<out>/crossover.md``, ``<out>/fronts.md`` and ``<out>/fronts.png`` (the study goes to
``results/<out name>.db``), and prints the tables.

    nice -n 10 .venv/bin/python benchmarks/deploy_fronts.py --trials 16 --steps 60 --timeout 720
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import _repo_path  # noqa: F401  (repository root first on sys.path)
import torch
import yaml

from evaluators import load_space
from search_spaces.arch import ArchSpec, BlockSpec, FFNSpec, MixerSpec, StageSpec, StemSpec
from search_spaces.deploy_profiles import Profile, Scale, profile_model
from search_spaces.mixer_registry import get_mixer_info
from search_spaces.space import SPACES_DIR

SWEEP_WIDTH = 64  # the middle of seq-hybrid's widths (32, 64, 96), times --scale


def sweep_mixers(space) -> dict:
    """mixer name -> the first listed value of each parameter, from the space's choices."""
    return {m.type: {k: v[0] for k, v in m.params.items()} for m in space.stages[0].mixers}


def forward_ms(model: torch.nn.Module, x: torch.Tensor) -> float:
    """One timed forward, inference mode."""
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(x)
        return (time.perf_counter() - t0) * 1e3


def sweep(space, lengths: list, scale: int, calls: int, cap_ms: float) -> dict:
    """{mixer: {length: ms}} for a one-block model of each mixer at width SWEEP_WIDTH x scale: the
    best of ``calls`` rounds, each round timing every mixer once in turn (after one warm-up each),
    so a burst of load on the shared machine hits all mixers of a length alike. A mixer slower
    than softmax at a length where it took over ``cap_ms`` is not timed at longer lengths (it has
    not overtaken softmax there, and each call would cost seconds)."""
    mixers = sweep_mixers(space)
    out = {name: {} for name in mixers}
    live = list(mixers)
    for n in lengths:
        models = {}
        for name in live:
            arch = ArchSpec(StemSpec(), (StageSpec(SWEEP_WIDTH, (BlockSpec(MixerSpec(name, mixers[name]),
                                                                           FFNSpec("none")),)),),
                            causal=space.io.causal).validate()
            torch.manual_seed(0)
            models[name] = profile_model(arch, space.io, Profile("sweep", seq_len=n, scale=Scale(dim=scale))).eval()
        x = torch.randint(0, space.io.vocab_size, (1, n))  # (B, N)
        for name in live:
            forward_ms(models[name], x)  # warm-up
        for _ in range(calls):
            for name in live:
                t = forward_ms(models[name], x)
                out[name][n] = min(t, out[name].get(n, t))
        print("  N=%5d: " % n + ", ".join(f"{name} {out[name][n]:.1f}" for name in live) + " ms", flush=True)
        live = [m for m in live if m == "softmax" or not (out[m][n] > cap_ms and out[m][n] > out["softmax"][n])]
    return out


def crossover(times: dict, base: dict) -> tuple:
    """(length estimate or None, bracket text): the shortest length from which on ``times`` beats
    ``base`` at every measured length, interpolated in log-log where the ratio crosses 1."""
    lengths = sorted(times)
    ratio = {n: times[n] / base[n] for n in lengths}
    i = len(lengths)
    while i > 0 and ratio[lengths[i - 1]] < 1:
        i -= 1
    if i == len(lengths):
        return None, f"not up to {lengths[-1]}" + ("" if lengths[-1] == max(base) else " (not timed longer)")
    if i == 0:
        return lengths[0], f"<= {lengths[0]} (faster at every length)"
    a, b = lengths[i - 1], lengths[i]
    la, lb = math.log(ratio[a]), math.log(ratio[b])
    est = math.exp(math.log(a) + (math.log(b) - math.log(a)) * la / (la - lb))
    return est, f"{a}-{b}"


def crossover_table(times: dict, lengths: list) -> str:
    head = "| mixer | family | " + " | ".join(str(n) for n in lengths) + " | overtakes softmax at |"
    rows = [head, "|" + "---|" * (len(lengths) + 3)]
    for name, t in times.items():
        if name == "softmax":
            cross = "-"
        else:
            est, bracket = crossover(t, times["softmax"])
            cross = bracket if est is None or "every" in bracket else f"~{est:,.0f} tokens ({bracket})"
        cells = " | ".join(f"{t[n]:.2f}" if n in t else "-" for n in lengths)
        rows.append(f"| {name} | {get_mixer_info(name).family} | {cells} | {cross} |")
    return "\n".join(rows)


def write_space(out: Path, args) -> Path:
    raw = yaml.safe_load((SPACES_DIR / "seq-hybrid.yaml").read_text())
    raw["name"] = "seq-hybrid-deploy"
    raw["deploy"] = {"long": {"seq_len": args.long_len, "batch_size": 1, "threads": 1,
                              "scale": {"dim": f"{args.scale}x", "heads": "scale"}}}
    raw["objectives"] = {"accuracy": "maximize", "latency_ms": "minimize", "latency_ms@long": "minimize"}
    raw["train"] = {**raw["train"], "steps": args.steps}
    raw["latency"] = {**raw["latency"], "warmup": 1, "repeats": 3, "max_seconds": 1.0}
    path = out / "seq-hybrid-deploy.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_search(space_path: Path, out: Path, args) -> str:
    db = Path("results") / f"{out.name}.db"  # results/ is not versioned
    db.parent.mkdir(exist_ok=True)
    db.unlink(missing_ok=True)  # a fresh study each run
    storage = f"sqlite:///{db.resolve()}"
    cmd = [sys.executable, "-m", "nas.cli.base", "search", "--space", str(space_path), "--study", "deploy-fronts",
           "--storage", storage, "--trials", str(args.trials), "--sampler", "random", "--seed", str(args.seed),
           "--timeout", str(args.timeout)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=dict(os.environ, COLUMNS="160"))
    return storage


def kind(mixers: str) -> str:
    """attention only | hybrid | attention-free: the registry families of an arch's mixers."""
    fams = {get_mixer_info(m).family for m in mixers.split("+")}
    return "attention only" if fams == {"attention"} else ("hybrid" if "attention" in fams else "attention-free")


def kinds(rows) -> str:
    counts = rows["arch.mixers"].map(kind).value_counts()
    return ", ".join(f"{counts[k]} {k}" for k in ("attention only", "hybrid", "attention-free") if k in counts)


def families(rows) -> str:
    fams = {}
    for mixers in rows["arch.mixers"]:
        for m in mixers.split("+"):
            fams.setdefault(get_mixer_info(m).family, set()).add(m)
    return "; ".join(f"{f} ({', '.join(sorted(ms))})" for f, ms in sorted(fams.items()))


COSTS = (("latency_ms", "latency_ms@long"), ("flops", "flops@long"))  # (short, long) per cost, measured / exact


def fronts(storage: str, space_path: Path):
    """The trials, with ``flops@long`` counted for each complete one (exact: it does not depend on
    the machine's load, so its fronts show what the timed ones show without the noise), and the
    front of accuracy against each cost column."""
    import nas
    from evaluators.latency import LatencyConfig
    from evaluators.profile_costs import ProfileRequest, measure_profile

    df = nas.load_trials(storage, "deploy-fronts")
    space = load_space(str(space_path))
    request = ProfileRequest(space.profiles["long"], ("flops",))
    done = df["state"] == "COMPLETE"
    df.loc[done, "flops@long"] = [measure_profile(ArchSpec.from_json(a), space.io, request, LatencyConfig())["flops@long"]
                                  for a in df.loc[done, "arch_json"]]
    cols = [c for pair in COSTS for c in pair]
    return df, {c: nas.pareto_front(df, {"accuracy": "maximize", c: "minimize"}) for c in cols}


def _families_of(rows) -> set:
    return {get_mixer_info(m).family for ms in rows["arch.mixers"] for m in ms.split("+")}


def _mixers_of(rows) -> set:
    return {m for ms in rows["arch.mixers"] for m in ms.split("+")}


def model_family(mixers: str) -> str:
    """A candidate's family: the registry families of its mixers, joined (``linear``,
    ``attention+hyena``): a hybrid is a family of its own, not a member of each of its parts'."""
    return "+".join(sorted({get_mixer_info(m).family for m in mixers.split("+")}))


def _model_families_of(rows) -> set:
    return set(rows["arch.mixers"].map(model_family))


def fronts_table(df, front: dict) -> str:
    lines = [f"{int((df['state'] == 'COMPLETE').sum())} complete trials.", "",
             "| cost | front at the task shape: families (mixers) | front at the long profile: families (mixers) | "
             "non-attention families only on the long front: counting a hybrid's parts / as models | "
             "mixers other than softmax only on the long front |", "|---|---|---|---|---|"]
    for short, long in COSTS:
        only = sorted(_families_of(front[long]) - _families_of(front[short]) - {"attention"})
        only_models = sorted(_model_families_of(front[long]) - _model_families_of(front[short]) - {"attention"})
        only_mixers = sorted(_mixers_of(front[long]) - _mixers_of(front[short]) - {"softmax"})
        lines.append(f"| {short} / {long} | {kinds(front[short])}: {families(front[short])} | "
                     f"{kinds(front[long])}: {families(front[long])} | {', '.join(only) or 'none'} / "
                     f"{', '.join(only_models) or 'none'} | {', '.join(only_mixers) or 'none'} |")
    on = {c: set(f["number"]) for c, f in front.items()}
    lines += ["", f"| trial | accuracy | {' | '.join(front)} | mixers | architecture |",
              "|---|---|" + "---|" * len(front) + "---|---|"]
    for _, r in df[df["number"].isin(set().union(*on.values()))].sort_values("accuracy", ascending=False).iterrows():
        cells = " | ".join(f"{r[c]:.4g}{' *' if r['number'] in on[c] else ''}" for c in front)
        lines.append(f"| {r['number']} | {r['accuracy']:.3f} | {cells} | {kind(r['arch.mixers'])} | "
                     f"{r['arch.mixers']} x{r['arch.depth']} @{r['arch.width']} |")
    lines.append("\n`*`: on the front of accuracy against that column.")
    return "\n".join(lines)


def plot(df, front: dict, path: Path, long_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    tag = lambda d: d.assign(kind=d["arch.mixers"].map(kind))  # noqa: E731
    done = tag(df[df["state"] == "COMPLETE"])
    kinds = ["attention only", "hybrid", "attention-free"]
    colors = dict(zip(kinds, ("tab:red", "tab:purple", "tab:blue")))
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for row, pair in zip(axes, COSTS):
        for ax, col, where in zip(row, pair, ("task shape (32 tokens)", long_name)):
            for k in kinds:
                sub = done[done["kind"] == k]
                ax.scatter(sub[col], sub["accuracy"], s=22, alpha=0.45, color=colors[k], label=k)
            f = tag(front[col]).sort_values(col)
            ax.step(f[col], f["accuracy"], where="post", color="black", lw=1)
            for k in kinds:
                sub = f[f["kind"] == k]
                ax.scatter(sub[col], sub["accuracy"], s=70, color=colors[k], edgecolor="black", zorder=3)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a narrow log axis overlap
            ax.set_xlabel(f"{col} (log)")
            ax.set_ylabel("accuracy (proxy)")
            ax.set_title(f"{'measured latency' if 'latency' in col else 'FLOPs (exact)'} at {where}")
    axes[0][0].legend(title="mixers", fontsize=8)
    fig.suptitle("seq-hybrid: the same candidates, cost at the task's shape (left) and at the long profile (right)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--steps", type=int, default=60, help="proxy training steps (seq-hybrid: 200)")
    ap.add_argument("--timeout", type=int, default=720, help="seconds after which the search starts no trial")
    ap.add_argument("--long-len", type=int, default=4096)
    ap.add_argument("--max-len", type=int, default=8192, help="longest length of the crossover sweep")
    ap.add_argument("--scale", type=int, default=4, help="width factor of the long profile and the sweep")
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--cap-ms", type=float, default=3000, help="sweep: stop a mixer slower than softmax past this")
    ap.add_argument("--analyze-only", action="store_true", help="tables and plot from the last run's study")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-search", action="store_true", help="only the crossover sweep")
    ap.add_argument("--out", default="benchmarks/deploy-fronts")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    stamp = (f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs, torch {torch.__version__}, 1 thread")
    space = load_space("seq-hybrid")  # bound to its task
    lengths = [n for n in (128, 256, 512, 1024, 2048, 4096, 8192, 16384) if n <= args.max_len]
    if not args.analyze_only:
        print(f"crossover sweep at width {SWEEP_WIDTH * args.scale} ({stamp})", flush=True)
        table = crossover_table(sweep(space, lengths, args.scale, args.calls, args.cap_ms), lengths)
        (out / "crossover.md").write_text(f"Forward ms of a one-block model (no FFN), width {SWEEP_WIDTH * args.scale}, "
                                          f"batch 1, best of {args.calls} interleaved rounds; {stamp}.\n\n{table}\n")
        print(table, f"\n(sweep {time.time() - t0:.0f} s)", flush=True)
    if args.skip_search:
        return
    storage = (f"sqlite:///{(Path('results') / f'{out.name}.db').resolve()}" if args.analyze_only
               else run_search(write_space(out, args), out, args))
    df, front = fronts(storage, out / "seq-hybrid-deploy.yaml")
    text = fronts_table(df, front)
    long_name = f"{args.long_len} tokens, width x{args.scale}"
    ran = f"{df['datetime_start'].min():%Y-%m-%d %H:%M} to {df['datetime_start'].max():%H:%M}"
    (out / "fronts.md").write_text(f"seq-hybrid, {args.trials} trials asked (random sampler, seed {args.seed}), "
                                   f"{args.steps} training steps; long = {long_name}; trials started {ran}; "
                                   f"{stamp.split(', ', 1)[1]}.\n\n{text}\n")
    plot(df, front, out / "fronts.png", long_name)
    print(text, f"\n(total {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
