"""How much memory a model needs, estimated from its ArchSpec before anything is allocated.

Every model the engine builds is checked here first: the proxy a trial trains, each deployment
profile's model (scaled, at the profile's input shape, batch and dtype), the model `nas train`
trains, the models `nas fidelity` trains and times, the models `nas profile` times. A model that
would not fit is refused with :class:`~evaluators.errors.TooLarge` (a ``TrialFailure``: in a
search, a FAIL trial with the reason), and never built; so the kernel's out-of-memory killer,
which ends the whole search without a word, is not what finds out.

The estimate: the model is built on PyTorch's ``meta`` device (shapes only, no memory) and run
there, under :class:`evaluators.memory.PeakMemoryMode` with ``meta=True``, which adds up the
bytes each tensor the run creates would take and follows their frees, as it does on real
tensors. Scaled dot-product attention is sent to the kernel the CPU would pick (the flash kernel
works on blocks; the math one holds the N x N map), since on ``meta`` PyTorch always picks math.

- inference (a profile's model, timing, evaluation): the float32 weights and buffers (every
  model is built in float32, then cast to the profile's dtype), the input, and the peak of one
  forward at the batch and dtype;
- training (the proxy, `nas train`, `nas fidelity`): the weights and AdamW's two moments (12
  bytes per parameter), the input and targets, and the peak of one forward and backward at the
  batch, the parameters' gradients included; the proxy's evaluation (batches of up to
  ``EVAL_BATCH``, the optimizer's state still held) is counted too, whichever is larger.

On the CPU the counted tensors are what a run holds; what it does not count (workspaces inside one
operator, the allocator's slack, the task's data, the interpreter) is why only ``PLANNED`` of the
available memory may be planned for. A model that cannot run on ``meta`` (a plugin mixer that
reads values, say) is checked on its weights and one activation of the residual stream, a lower
bound as in :mod:`evaluators.fit`. A CUDA profile's activations live on the GPU, whose own
out-of-memory error is caught as a trial failure; its host side (the float32 weights it is
built with) is checked here.
"""

from __future__ import annotations

import functools
import gc
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from evaluators import fit
from evaluators.errors import TooLarge
from evaluators.fit import size_text
from evaluators.memory import PeakMemoryMode
from search_spaces.arch import ArchSpec
from search_spaces.builder import build_model
from search_spaces.deploy_profiles import Profile, scale_arch
from search_spaces.task_io import TaskIO

__all__ = ["EVAL_BATCH", "PLANNED", "CpuAttention", "Estimate", "Need", "check_need", "check_profile", "check_proxy",
           "estimate", "inference_need", "profile_need", "proxy_need", "training_need"]

PLANNED = 0.7  # the fraction of the available memory one model may be planned to use
EVAL_BATCH = 256  # evaluators.train.evaluate_split's batch
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_FLASH = 1  # torch._fused_sdp_choice: the CPU flash kernel (0 is the math one)


@dataclass(frozen=True)
class Need:
    """What running one model needs: ``bytes`` in all, its ``params``, and what it runs (for
    messages: "training it at batch 32")."""

    bytes: int
    params: int
    what: str


def check_need(need: Need, available: Optional[int], where: str = "") -> None:
    """:class:`TooLarge` when ``need`` is over :data:`PLANNED` of ``available`` bytes (None:
    unknown, not checked); its one-line reason starts with ``where`` ("profile long: ")."""
    if available is None or need.bytes <= PLANNED * available:
        return
    raise TooLarge(f"{where}too large for this machine ({need.what} needs about {size_text(need.bytes)}: "
                   f"{need.params:,} parameters; {size_text(PLANNED * available)} of the {size_text(available)} of "
                   f"memory available may be used)")


def _available(available) -> Optional[int]:
    return fit.available_memory() if available is _MACHINE else available


_MACHINE = object()  # "ask the machine" (evaluators.fit.available_memory), the default of the checks


def check_proxy(arch: ArchSpec, io: TaskIO, train, *, eval_batch: int = EVAL_BATCH, zero_cost_batch: int = 0,
                available=_MACHINE) -> Need:
    """The proxy training of ``arch`` (``train``: an ``evaluators.train.TrainConfig``) fits, or
    :class:`TooLarge`; returns its :func:`proxy_need`."""
    need = proxy_need(arch, io, train.batch_size, eval_batch=eval_batch, zero_cost_batch=zero_cost_batch)
    check_need(need, _available(available))
    return need


def check_profile(arch: ArchSpec, io: TaskIO, profile: Profile, available=_MACHINE) -> Need:
    """The model of ``arch`` at ``profile`` fits, or :class:`TooLarge` naming the profile."""
    need = profile_need(arch, io, profile)
    check_need(need, _available(available), f"profile {profile.name}: " if profile.name else "")
    return need


def proxy_need(arch: ArchSpec, io: TaskIO, batch: int, *, eval_batch: int = EVAL_BATCH,
               zero_cost_batch: int = 0) -> Need:
    """Training ``arch`` at ``batch`` (and at ``zero_cost_batch``, which the zero-cost proxies
    train a step at), then evaluating it in batches of ``eval_batch`` with the optimizer's state held."""
    train = training_need(arch, io, max(batch, zero_cost_batch))
    evaluation = inference_need(arch, io, eval_batch)
    # evaluation holds what training leaves: weights, gradients and AdamW's moments (16 bytes a parameter)
    eval_bytes = evaluation.bytes + 12 * evaluation.params
    return Need(max(train.bytes, eval_bytes), train.params, f"training it at batch {batch}")


def profile_need(arch: ArchSpec, io: TaskIO, profile: Profile) -> Need:
    """The model of ``arch`` at ``profile``: built in float32, run at the profile's batch and
    dtype (on a CUDA profile only the float32 weights are in this machine's memory)."""
    io_p, arch_p = profile.task_io(io), scale_arch(arch, profile)
    if profile.device_type == "cuda":
        _, params, buffers = estimate(arch_p, io_p, 1, "float32", "weights")
        return Need(4 * params + buffers, params, f"its model on {profile.device}")
    need = inference_need(arch_p, io_p, profile.batch_size, profile.dtype)
    return Need(need.bytes, need.params, f"its model at batch {profile.batch_size}, {profile.dtype}")


def inference_need(arch: ArchSpec, io: TaskIO, batch: int, dtype: str = "float32") -> Need:
    """One forward of ``arch`` at ``batch`` in ``dtype``: float32 weights, input, the forward's peak."""
    peak, params, buffers = estimate(arch, io, batch, dtype, "inference")
    return Need(4 * params + buffers + _input_bytes(io, batch, dtype) + peak, params, f"running it at batch {batch}")


def training_need(arch: ArchSpec, io: TaskIO, batch: int) -> Need:
    """One training step of ``arch`` at ``batch``: weights and AdamW's moments, input and targets,
    the peak of forward and backward (gradients included)."""
    peak, params, buffers = estimate(arch, io, batch, "float32", "training")
    return Need(12 * params + buffers + 2 * _input_bytes(io, batch, "float32") + peak, params,
                f"training it at batch {batch}")


def _input_bytes(io: TaskIO, batch: int, dtype: str) -> int:
    n = 1
    for side in io.input_shape(batch):
        n *= side
    return n * (8 if io.kind == "tokens" else DTYPE_BYTES[dtype])  # token ids are int64


class Estimate(NamedTuple):
    """What :func:`estimate` counts: the peak bytes of the run, the parameters, and the bytes of
    the buffers as built (float32)."""

    peak: int
    params: int
    buffers: int


def estimate(arch: ArchSpec, io: TaskIO, batch: int, dtype: str = "float32", mode: str = "inference") -> Estimate:
    """``arch`` built and run on the meta device at ``batch`` in ``dtype`` (``mode``: inference,
    training, or weights: built, not run), counted. A model that cannot be built there counts as
    nothing; one that cannot run there, as one activation of its residual stream (lower bounds).
    Remembered per architecture, shape and attention backends (one check per trial asks twice)."""
    sdpa = (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled())
    return _estimate_cached(arch.to_json(), io, int(batch), dtype, mode, sdpa)


@functools.lru_cache(maxsize=256)
def _estimate_cached(arch_json: str, io: TaskIO, batch: int, dtype: str, mode: str, sdpa: tuple) -> Estimate:
    return _meta_run(ArchSpec.from_json(arch_json), io, batch, dtype, mode)


def _meta_run(arch: ArchSpec, io: TaskIO, batch: int, dtype: str, mode: str) -> Estimate:
    """:func:`estimate`, computed."""
    try:
        with torch.device("meta"):
            model = build_model(arch, io)
    except Exception:  # noqa: BLE001 - an unknown size counts as zero: the check stays a lower bound
        return Estimate(0, 0, 0)
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    if mode == "weights":
        return Estimate(0, params, buffers)
    model = model.to(_DTYPES[dtype])
    x = _meta_input(io, batch, dtype)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # frees happen when the last reference goes, as in PeakMemoryMode's own use
    try:
        return Estimate(_peak(model, x, mode == "training"), params, buffers)
    except Exception:  # noqa: BLE001 - a plugin that reads values on meta: the lower bound
        width = max(s.dim for s in arch.stages)
        return Estimate(batch * _tokens(io) * width * DTYPE_BYTES[dtype], params, buffers)
    finally:
        if gc_was_enabled:
            gc.enable()


def _meta_input(io: TaskIO, batch: int, dtype: str) -> torch.Tensor:
    shape = io.input_shape(batch)
    if io.kind == "tokens":
        return torch.zeros(shape, dtype=torch.long, device="meta")
    return torch.zeros(shape, dtype=_DTYPES[dtype], device="meta")


def _tokens(io: TaskIO) -> int:
    return io.seq_len if io.kind != "image" else io.image_size[0] * io.image_size[1]


def _peak(model: torch.nn.Module, x: torch.Tensor, training: bool) -> int:
    """Peak bytes one forward (and, ``training``, backward) of the meta ``model`` would allocate."""
    if not training:
        model.eval()
        with torch.inference_mode(), PeakMemoryMode(meta=True) as mode, CpuAttention():
            model(x)
        return mode.peak
    model.train()
    with PeakMemoryMode(meta=True) as mode, CpuAttention():
        logits = model(x)
        target = torch.zeros(logits.shape[:-1].numel(), dtype=torch.long, device="meta")
        F.cross_entropy(logits.flatten(0, -2).float(), target).backward()
        del logits
    return mode.peak


_SDPA_FLASH_CPU = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default


class CpuAttention(TorchFunctionMode):
    """Sends ``F.scaled_dot_product_attention`` on meta tensors to the kernel the CPU picks for
    the same call (asked with one-token CPU tensors of the same rank, dtype, head size, mask and
    causality): its flash kernel when it would run (nothing N x N), else PyTorch's own path,
    which on meta is the math one that materializes the attention map, as on the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is F.scaled_dot_product_attention and args and args[0].is_meta and _cpu_flash(args, kwargs):
            q, k, v = args[:3]
            mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
            dropout = args[4] if len(args) > 4 else kwargs.get("dropout_p", 0.0)
            causal = args[5] if len(args) > 5 else kwargs.get("is_causal", False)
            if mask is not None and mask.dtype == torch.bool:  # made additive first, as PyTorch's own path does
                mask = torch.where(mask, torch.zeros((), dtype=q.dtype, device=q.device),
                                   torch.full((), float("-inf"), dtype=q.dtype, device=q.device))
            return _SDPA_FLASH_CPU(q, k, v, dropout, causal, attn_mask=mask, scale=kwargs.get("scale"))[0]
        return func(*args, **kwargs)


def _cpu_flash(args, kwargs) -> bool:
    """Would the CPU run this attention call with its flash kernel?"""
    q, k, v = args[:3]
    mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
    if kwargs.get("enable_gqa") or q.dim() != 4 or len(args) > 6:
        return False

    def tiny(t):
        return torch.empty((1,) * (t.dim() - 1) + (t.shape[-1],), dtype=t.dtype)

    small = {"attn_mask": None if mask is None else torch.zeros((1,) * mask.dim(), dtype=mask.dtype),
             "dropout_p": args[4] if len(args) > 4 else kwargs.get("dropout_p", 0.0),
             "is_causal": args[5] if len(args) > 5 else kwargs.get("is_causal", False), "scale": kwargs.get("scale")}
    return torch._fused_sdp_choice(tiny(q), tiny(k), tiny(v), **small) == _FLASH
