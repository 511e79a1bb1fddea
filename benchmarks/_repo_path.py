"""Imported first by the benchmark scripts: the repository root goes first on ``sys.path`` and this
folder comes off it, since ``benchmarks/kernels.py`` would otherwise shadow the ``kernels`` package."""

import os
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or os.curdir).resolve() != _HERE]
