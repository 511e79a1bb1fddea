"""Imported first by the benchmark scripts: the repository root goes first on ``sys.path`` (a
script runs the checkout it is in) and this folder comes off it, so a script's name can never hide
a module of the same name (``tests/test_public_api.py`` checks that none is one)."""

import os
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or os.curdir).resolve() != _HERE]
