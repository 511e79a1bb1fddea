"""Export a trained model for use without this package: TorchScript or ONNX.

Both formats fix the input shape to the task's (``model.io``: sequence length, image size, channels)
and keep the batch size free. TorchScript traces the model (``torch.jit.trace``); ONNX uses
PyTorch's exporter (``torch.onnx.export``, the torch.export-based one, PyTorch's default), which
needs the packages ``onnx`` and ``onnxscript`` (``pip install 'mixer-nas[onnx]'``). Each export is
checked: the exported model is run on a batch of another size than the one it was made with and
its outputs are compared with the PyTorch model's (ONNX: with ``onnxruntime`` when installed).

Mixers whose models do not export, and why, are listed in :data:`NOT_EXPORTABLE` (and in
docs/training.md); tests/nas/models/test_export.py exports every registered mixer to every format and fails
when the list is wrong.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import warnings
from pathlib import Path

import torch

from search_spaces.failures import first_line

__all__ = ["FORMATS", "NOT_EXPORTABLE", "ExportError", "export_model", "missing_packages"]

FORMATS = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}  # format -> file written in the folder
NEEDS = {"torchscript": (), "onnx": ("onnx", "onnxscript")}
NOT_EXPORTABLE = {
    "torchscript": {},
    "onnx": {"hilo": "its Hi-Fi windows call scaled_dot_product_attention on 5-D tensors; the ONNX "
                     "exporter converts only 4-D query, key and value"},
}
TOLERANCE = 1e-4  # max |exported - eager| on the check batch (float32)
EXPORT_BATCH, CHECK_BATCH = 2, 3


class ExportError(Exception):
    """The export failed, or its outputs differ from the model's; the message says which."""


def missing_packages(fmt: str) -> list[str]:
    """The packages ``fmt`` needs that are not installed here."""
    return [p for p in NEEDS[fmt] if importlib.util.find_spec(p) is None]


def _example(io, batch: int, seed: int) -> torch.Tensor:
    from evaluators.cost import example_input

    return example_input(io, batch, seed=seed)


def _known(model, fmt: str) -> str:
    """'; mixer hilo is known not to export to onnx (...)' when the model has such mixers."""
    names = sorted(set(model.arch.mixer_types()) & set(NOT_EXPORTABLE[fmt])) if hasattr(model, "arch") else []
    return "".join(f"; mixer {n} is known not to export to {fmt} ({NOT_EXPORTABLE[fmt][n]})" for n in names)


def _summary(e: BaseException) -> str:
    """The one line of an exporter's error that says what went wrong."""
    text = str(e)
    if "Exception summary" in text:  # torch.onnx: the root cause comes first in its summary
        for line in text.split("Exception summary", 1)[1].splitlines():
            if line.startswith("<class"):
                return line.split(">: ", 1)[-1].strip()
    return first_line(e)


def _torchscript(model, x: torch.Tensor, path: Path):
    with warnings.catch_warnings(), torch.no_grad():  # TracerWarnings (shapes are fixed on purpose), deprecations
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (x,), check_trace=False)
        traced.save(str(path))
        loaded = torch.jit.load(str(path))
    return lambda inp: loaded(inp)


def _onnx(model, x: torch.Tensor, path: Path):
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["logits"],
                          dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, external_data=False)
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda inp: torch.from_numpy(session.run(None, {"x": inp.numpy()})[0])


def export_model(model, fmt: str, path) -> dict:
    """Write ``model`` (a built NASModel, on CPU) to ``path`` in ``fmt`` and check the file's
    outputs against the model's. Returns ``{"path", "format", "max_abs_diff"}`` (``max_abs_diff``
    None when the check cannot run: ONNX without onnxruntime). Raises :class:`ExportError`."""
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r} is not one of {sorted(FORMATS)}")
    missing = missing_packages(fmt)
    if missing:
        raise ExportError(f"{fmt} export needs the package{'s' if len(missing) > 1 else ''} {', '.join(missing)}, "
                          f"not installed here (pip install 'mixer-nas[onnx]')")
    path = Path(path)
    model = model.eval()
    x, check = _example(model.io, EXPORT_BATCH, seed=0), _example(model.io, CHECK_BATCH, seed=1)
    try:
        run = (_torchscript if fmt == "torchscript" else _onnx)(model, x, path)
    except Exception as e:  # noqa: BLE001 - any exporter failure is reported in one line
        path.unlink(missing_ok=True)
        raise ExportError(f"{fmt} export failed: {_summary(e)}{_known(model, fmt)}") from None
    diff = None
    if run is not None:
        with torch.no_grad():
            diff = float((run(check) - model(check)).abs().max())
        if not diff <= TOLERANCE:
            path.unlink(missing_ok=True)
            raise ExportError(f"{fmt} export differs from the model: max |difference| {diff:.3g} on a batch of "
                              f"{CHECK_BATCH} (allowed {TOLERANCE:g}){_known(model, fmt)}")
    return {"path": str(path), "format": fmt, "max_abs_diff": diff}
