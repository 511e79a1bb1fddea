#!/usr/bin/env bash
# Download the wheels benchmarks/gpu_check.sh needs on a GPU machine that cannot reach a package index.
# Run it here (where pip reaches PyPI), then send the folder along (.whl, ignored by git). The GPU
# machine lent to this project has PyTorch, Triton, pytest, pandas, typer, rich, timm, PyYAML, ... but not
# Optuna and its storage stack: those are pure Python, fetched at the versions of this venv.
#
#   benchmarks/gpu_wheels.sh [DEST]      # DEST defaults to .whl
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dest="${1:-.whl}"
PY="${PYTHON:-.venv/bin/python}"
mapfile -t pins < <("$PY" - <<'PYEOF'
from importlib.metadata import version
for dist in ("optuna", "sqlalchemy", "alembic", "mako", "colorlog"):
    print(f"{dist}=={version(dist)}")
PYEOF
)
mkdir -p "$dest"
"$PY" -m pip download -q --no-deps --only-binary=:all: --platform any --implementation py --python-version 3.12 \
    -d "$dest" "${pins[@]}"
ls -l "$dest"
