#!/usr/bin/env bash
# Every check that needs a GPU, in one run, writing everything to one folder:
#   1. the `gpu`-marked tests (Triton kernels and default paths against their references),
#   2. the kernel benchmark table (benchmarks/kernel_speed.py) in fp16 and bf16,
#   3. a small search whose latency is timed on CUDA (benchmarks/gpu_latency.yaml), and its front.
# Each step has its own time limit (220 + 60 + 60 + 90 s), so the whole run stays under 8 minutes on an
# H100/H200 (a step cut short still writes what it did, and the run reports it as failed).
# Installs nothing from the network. Python packages the machine lacks (optuna and SQLAlchemy for the
# search) can come as wheels in $WHEELS (default: .whl in the repository), installed with --no-index;
# benchmarks/gpu_wheels.sh downloads them. See benchmarks/README.md.
#
#   benchmarks/gpu_check.sh [--cpu] [OUTDIR]      # OUTDIR defaults to $OUT
#
# --cpu runs the same steps without a GPU (the gpu tests skip, the table times the PyTorch paths, the
# search times latency on the CPU), to check this script. Exit status: non-zero if any step failed.
set -uo pipefail

cpu=0
if [[ "${1:-}" == "--cpu" ]]; then cpu=1; shift; fi
dir="${1:-${OUT:-}}"
if [[ -z "$dir" ]]; then
    echo "usage: benchmarks/gpu_check.sh [--cpu] OUTDIR   (or set OUT)" >&2
    exit 2
fi
mkdir -p "$dir" && dir="$(cd "$dir" && pwd)"
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
PY="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
log="$dir/gpu_check.log"
: >"$log"
failed=()

say() { echo "== $* ($(date +%T))" | tee -a "$log"; }

# step NAME SECONDS OUTFILE COMMAND...: run under a time limit (SIGINT first, so pytest still prints its
# summary), output to OUTFILE and the log; a failure is recorded, not fatal.
step() {
    local name=$1 secs=$2 out=$3 t0=$SECONDS rc
    shift 3
    say "$name: $*"
    timeout -s INT -k 20 "$secs" "$@" 2>&1 | tee "$out" >>"$log"
    rc=${PIPESTATUS[0]}
    say "$name: exit $rc after $((SECONDS - t0)) s"
    if [[ $rc -ne 0 ]]; then failed+=("$name (exit $rc)"); fi
}

# Wheels for packages the machine lacks, installed into a folder of this run only.
wheels="${WHEELS:-.whl}"
if compgen -G "$wheels/*.whl" >/dev/null; then
    site="$tmp/site"
    say "installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels (no index) into $site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl \
        >>"$log" 2>&1 || failed+=("wheel install")
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || echo "nvidia-smi: none"
    "$PY" - <<'EOF'
import importlib, platform
import torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda)
if torch.cuda.is_available():
    from kernels.dispatch import device_kind
    print("device", torch.cuda.get_device_name(), "| kind", device_kind(torch.device("cuda")))
for name in ("triton", "optuna", "sqlalchemy", "pandas", "timm", "typer", "yaml"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except ImportError as e:
        print(name, "MISSING:", e)
EOF
} >"$dir/env.txt" 2>&1
cat "$dir/env.txt" >>"$log"

if [[ $cpu -eq 0 ]] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    say "no CUDA device visible: run with --cpu to check the script without one"
    exit 1
fi

# 1. Tests marked gpu. Only the files that have them are collected, and a file that cannot be imported
# here does not stop the others.
mapfile -t gpu_files < <(grep -rl --include="test_*.py" "pytest.mark.gpu" tests | sort)
step "gpu tests" 220 "$dir/gpu_tests.txt" "$PY" -m pytest -m gpu -p no:cacheprovider -q -rfEs \
    --durations=10 --continue-on-collection-errors "${gpu_files[@]}"

# 2. The kernel table, fp16 and bf16 (on --cpu: the PyTorch paths once, quick).
if [[ $cpu -eq 1 ]]; then
    step "kernel table" 120 "$dir/kernels_cpu.md" "$PY" benchmarks/kernel_speed.py --quick
else
    step "kernel table fp16" 60 "$dir/kernels_float16.md" "$PY" benchmarks/kernel_speed.py --dtype float16
    step "kernel table bf16" 60 "$dir/kernels_bfloat16.md" "$PY" benchmarks/kernel_speed.py --dtype bfloat16
fi

# 3. A small search with latency timed on CUDA (training stays on the CPU), then its front.
space="$tmp/gpu_latency.yaml"
trials=()
if [[ $cpu -eq 1 ]]; then  # latency on the CPU, and two trials: this only checks the script
    sed 's/device: cuda/device: cpu/' benchmarks/gpu_latency.yaml >"$space"
    trials=(--trials 2)
else
    cp benchmarks/gpu_latency.yaml "$space"
fi
db="sqlite:///$tmp/gpu_latency.db"
step "latency search" 90 "$dir/search.txt" "$PY" -m nas.cli.base search --space "$space" --study gpu-latency --storage "$db" \
    "${trials[@]}"
if [[ -f "$tmp/gpu_latency.db" ]]; then
    "$PY" -m nas.cli.base pareto --study gpu-latency --storage "$db" >>"$dir/search.txt" 2>&1
    "$PY" -m nas.cli.base export --study gpu-latency --storage "$db" --out "$dir/search.csv" >>"$log" 2>&1 \
        || failed+=("search export")
fi

if [[ ${#failed[@]} -gt 0 ]]; then
    say "FAILED: ${failed[*]}"
    exit 1
fi
say "all steps passed; results in $dir"
