"""Zero-cost proxies: scores of an untrained network from one forward/backward pass.

Every proxy takes the freshly initialised model, the task's I/O and (for the data-dependent ones)
one seeded mini-batch ``(x, y)`` of training data, and never changes the model it is given
(parameters and gradients are left as they were; synflow works on a double-precision copy).
Higher is better for every score here (that is how each was proposed).

- ``synflow`` (Tanaka et al. 2020, "Pruning neural networks without any data by iteratively
  conserving synaptic flow"): replace every parameter by its absolute value, feed an all-ones
  input, R = sum of the outputs, score = sum over parameters of |theta * dR/dtheta|. Computed in
  float64 on a copy, in eval mode. *Token models*: the embedding is fed an all-ones "multi-hot"
  input, i.e. its output at every position is ``ones(V) @ |E|`` (the column sums of the absolute
  embedding table), exactly what a linear layer would produce from an all-ones input, so the
  embedding's own parameters get a synaptic-flow gradient too. Signal/image models get
  ``ones`` of the input shape. Batch of one sample.
- ``naswot`` (Mellor et al. 2021, "Neural Architecture Search without Training"): for each
  sample of the mini-batch, the binary code of every hooked unit (1 if its pre-activation is
  > 0). Kernel K = C C^T + (1 - C)(1 - C)^T (= number of units minus the Hamming distance);
  score = log|det K|. Hooked units: the *inputs* of every ``nn.ReLU``, ``nn.GELU`` and
  ``nn.SiLU`` module (in our models: the FFN hidden layer of ``mlp`` (GELU) and the gate of
  ``glu`` (SiLU)), at every token position, flattened per sample. A model without any such module
  (e.g. every FFN is ``none``) falls back to the codes of the head's input (the final features).
  Eval mode. A singular kernel (two samples with identical codes) gives ``-inf``.
- ``jacob_cov`` (Mellor et al. 2020, v1 of the same paper): J = d(sum of outputs)/d(input) per
  sample (token models: w.r.t. the embedding output), flattened; C = corrcoef(J); with the
  eigenvalues v of C, score = -sum(log(v + 1e-5) + 1 / (v + 1e-5)).
- ``snip`` (Lee et al. 2019, "SNIP: single-shot network pruning"): the task's loss L on the
  mini-batch, score = sum over parameters of |theta * dL/dtheta|. Train mode, as in training.
- ``grad_norm`` (Abdelfattah et al. 2021, "Zero-cost proxies for lightweight NAS"): the L2 norm
  of the whole gradient dL/dtheta (one vector over all parameters). Train mode.

``params`` and ``flops`` are in :mod:`evaluators.cost`.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from evaluators.metrics import METRIC_REGISTRY, Metric
from evaluators.tasks.base import IGNORE_INDEX
from kernels.registry import Registry
from search_spaces.task_io import TaskIO

__all__ = ["ZERO_COST", "synflow", "naswot", "jacob_cov", "snip", "grad_norm", "compute_zero_cost",
           "register_zero_cost", "zero_cost_batch"]

HOOKED_ACTIVATIONS = (nn.ReLU, nn.GELU, nn.SiLU)


def _task_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if logits.dim() == 3:  # per-token: (B, N, V) against (B, N)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
    return F.cross_entropy(logits, y)


def _params(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _grads(model: nn.Module, loss_fn: Callable[[], torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(param, grad) pairs of ``loss_fn()`` without touching the model's ``.grad`` fields."""
    params = _params(model)
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [(p, g) for p, g in zip(params, grads) if g is not None]


def _keep_mode(fn):
    def wrapper(model: nn.Module, *a, **kw):
        was_training = model.training
        try:
            return fn(model, *a, **kw)
        finally:
            model.train(was_training)

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


# ------------------------------------------------------------------------ synflow
def synflow(model: nn.Module, io: TaskIO) -> float:
    """Sum over parameters of |theta * dR/dtheta| with |theta| and an all-ones input (float64)."""
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    handle = None
    if io.kind == "tokens":
        x = torch.zeros(io.input_shape(1), dtype=torch.long)
        emb = _embedding(net)

        def multi_hot(module, inputs, output):  # all-ones multi-hot input: ones(V) @ |E| per position
            ones = torch.ones(*inputs[0].shape, module.num_embeddings, dtype=module.weight.dtype)
            return ones @ module.weight  # (B, N, V) @ (V, C) -> (B, N, C)

        handle = emb.register_forward_hook(multi_hot)
    else:
        x = torch.ones(io.input_shape(1), dtype=torch.float64)
    prev_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # tensors a mixer creates in forward (positions, masks)
    try:
        pairs = _grads(net, lambda: net(x).sum())
    finally:
        torch.set_default_dtype(prev_dtype)
        if handle is not None:
            handle.remove()
    return float(sum((p.detach() * g).abs().sum() for p, g in pairs))


def _embedding(model: nn.Module) -> nn.Embedding:
    embs = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    if len(embs) != 1:
        raise ValueError(f"synflow: a token model needs exactly one nn.Embedding, found {len(embs)}")
    return embs[0]


# ------------------------------------------------------------------------ naswot
@_keep_mode
@torch.no_grad()
def naswot(model: nn.Module, x: torch.Tensor) -> float:
    """log|det K| of the binary activation-code kernel over the mini-batch ``x`` (Mellor et al.)."""
    codes = activation_codes(model, x)  # (B, units) float 0/1
    return float(naswot_from_codes(codes))


def activation_codes(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, units) binary codes: pre-activation > 0 of every hooked unit (see the module doc)."""
    model.eval()
    mods = [m for m in model.modules() if isinstance(m, HOOKED_ACTIVATIONS)]
    if not mods:
        head = getattr(model, "head", None)
        if head is None:
            raise ValueError("naswot: the model has no ReLU/GELU/SiLU module and no .head to fall back on")
        mods = [head]
    codes: list[torch.Tensor] = []

    def hook(module, inputs, output):
        codes.append((inputs[0] > 0).flatten(1).to(torch.float64))  # (B, units of this module)

    handles = [m.register_forward_hook(hook) for m in mods]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return torch.cat(codes, dim=1)


def naswot_from_codes(codes: torch.Tensor) -> float:
    c = codes.to(torch.float64)
    k = c @ c.T + (1 - c) @ (1 - c).T  # (B, B): units minus Hamming distance
    sign, logabsdet = torch.linalg.slogdet(k)
    return float(logabsdet) if sign != 0 else -math.inf


# ------------------------------------------------------------------------ jacob_cov
@_keep_mode
def jacob_cov(model: nn.Module, x: torch.Tensor, io: TaskIO) -> float:
    """-sum(log(v + k) + 1/(v + k)) over eigenvalues v of the correlation of per-sample input
    Jacobians (Mellor et al. 2020)."""
    model.eval()
    if io.kind == "tokens":
        emb = _embedding(model)
        captured = {}

        def keep(module, inputs, output):
            output = output.detach().requires_grad_(True)
            captured["z"] = output
            return output

        h = emb.register_forward_hook(keep)
        try:
            out = model(x)
        finally:
            h.remove()
        inp = captured["z"]
    else:
        inp = x.detach().clone().requires_grad_(True)
        out = model(inp)
    (jac,) = torch.autograd.grad(out.sum(), inp)
    return jacob_cov_from_jacobian(jac.flatten(1))


def jacob_cov_from_jacobian(jac: torch.Tensor, k: float = 1e-5) -> float:
    j = jac.to(torch.float64)
    j = j - j.mean(dim=1, keepdim=True)
    norm = j.norm(dim=1, keepdim=True).clamp_min(1e-30)
    corr = (j / norm) @ (j / norm).T  # (B, B) Pearson correlation
    v = torch.linalg.eigvalsh(corr).clamp_min(0.0)
    return float(-(torch.log(v + k) + 1.0 / (v + k)).sum())


# ------------------------------------------------------------------------ snip / grad_norm
@_keep_mode
def snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum over parameters of |theta * dL/dtheta| on the mini-batch (train mode)."""
    model.train()
    pairs = _grads(model, lambda: _task_loss(model(x), y))
    return float(sum((p.detach() * g).abs().sum() for p, g in pairs))


@_keep_mode
def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """L2 norm of the full gradient dL/dtheta on the mini-batch (train mode)."""
    model.train()
    pairs = _grads(model, lambda: _task_loss(model(x), y))
    return float(torch.sqrt(sum((g.double() ** 2).sum() for _, g in pairs)))


# ------------------------------------------------------------------------ registry
def _proxy_entry(name: str, fn: Callable, *, doc: str = "") -> Callable:
    """A proxy's entry is its function; registering it registers the metric ``name`` too (higher
    is better, known at initialisation), so a space may name it. The metric is added first: a name
    a metric already has is refused before the proxy is stored."""
    if not callable(fn):
        raise TypeError(f"zero-cost proxy {name!r}: fn must be callable, got {fn!r}")
    METRIC_REGISTRY.add(name, Metric(name, "maximize", at="init", zero_cost=True,
                                     doc=doc or "zero-cost proxy"))
    return fn


# name -> fn(model, io, x, y) -> float (higher is better); each is also a metric (evaluators.metrics)
ZERO_COST: Registry[Callable] = Registry("zero-cost proxy", entry=_proxy_entry)


def register_zero_cost(name: str, fn: Optional[Callable] = None, *, doc: str = ""):
    """Register ``fn(model, io, x, y) -> float`` (higher is better) as the zero-cost proxy ``name``
    and as the metric ``name``; without ``fn``, a decorator. The proxy must leave the model and the
    global RNG as they were (see the module docstring). Returns ``fn``."""
    deco = ZERO_COST.register(name, doc=doc)
    return deco if fn is None else deco(fn)


register_zero_cost("synflow", lambda model, io, x, y: synflow(model, io))
register_zero_cost("naswot", lambda model, io, x, y: naswot(model, x))
register_zero_cost("jacob_cov", lambda model, io, x, y: jacob_cov(model, x, io))
register_zero_cost("snip", lambda model, io, x, y: snip(model, x, y))
register_zero_cost("grad_norm", lambda model, io, x, y: grad_norm(model, x, y))


def compute_zero_cost(model: nn.Module, io: TaskIO, x: torch.Tensor, y: torch.Tensor,
                      names: Optional[Sequence[str]] = None, seed: int = 0) -> dict[str, float]:
    """The named zero-cost scores (all registered ones when ``names`` is None) of ``model`` on the
    mini-batch ``(x, y)``. Runs under a forked RNG (seeded with ``seed``) so that computing proxies
    does not change what training does next."""
    names = list(ZERO_COST) if names is None else names
    proxies = {name: ZERO_COST.get(name) for name in names}  # UnknownName before any work
    out = {}
    with torch.random.fork_rng(devices=[]):
        for name, proxy in proxies.items():
            torch.manual_seed(seed)
            out[name] = proxy(model, io, x, y)
    return out


def zero_cost_batch(task, batch_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded mini-batch of the task's training split (the data the proxies see)."""
    x, y = task.split("train")
    g = torch.Generator().manual_seed(seed + 7919)
    idx = torch.randperm(len(x), generator=g)[: min(batch_size, len(x))]
    return x[idx], y[idx]
