"""The mixer contract, checked on a tiny input before a space's models are built.

A mixer, built-in or a plugin's, promises what :class:`search_spaces.mixer.Mixer` says:
``forward(x[B, N, C], hw)`` returns a tensor of the input's shape and dtype, finite where the
input is; every parameter that requires a gradient gets one; and a mixer registered with
``causal=True`` and built causal lets no output position depend on a later input position.
Nothing else enforces these: a plugin whose "causal" mixer reads token t + 1 would top the front
of a language-model search, and one returning ``(B, 1, C)`` is broadcast against the residual
and its trials complete. :func:`check_space_mixers` therefore builds each mixer a space names on
a tiny input (16 tokens, or a 4 x 4 grid for image tasks) with the parameters the space uses,
and probes it:

* building it and its forward must not raise (``SystemExit`` included);
* the output is a tensor of the input's shape and dtype, and finite;
* every parameter that requires a gradient gets a finite one (a loss on the output, as training
  would); a parameter unused in this configuration has no gradient and is a broken contract;
* causal: each position j in turn is replaced by noise, in one batch beside the unchanged input,
  and no output before j may change beyond a tolerance (eval mode, so dropout is off).

The result is cached per (mixer class, parameters, width, causal, grid), so each configuration is
checked once per process. A plugin's mixer is probed with every value of every parameter the space
allows; a built-in one with the first configuration only (the tests probe their parameter values
one at a time). A broken contract is a :class:`ContractError`, one line naming the
mixer, where it comes from and the rule; :func:`check_space_mixers` raises it as a
:class:`~search_spaces.SpaceError` at the space's key (``nas`` exits 2, nothing written).
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch

from search_spaces.failures import failure_reason
from search_spaces.mixer_registry import get_mixer_info
from search_spaces.plugins import plugin_of
from search_spaces.space import MixerChoice, Space, SpaceError, StageChoices, valid_params

__all__ = ["ContractError", "check_mixer", "check_space_mixers", "mixer_origin", "probe_params"]

TOKENS = 16  # tokens of the probe input (a GRID grid for image tasks)
GRID = (4, 4)
BATCH = 2
NOISE = 3.0  # scale of the noise that replaces a position in the causal probe
TOLERANCE = 1e-4  # an output changed if it moved more than this times (1 + its largest magnitude)

# (class, parameters, dim, causal, grid) -> the rule it breaks, or None
_CHECKED: dict[tuple, Optional[str]] = {}


class ContractError(ValueError):
    """A mixer breaks its contract; ``str(e)`` is one line naming it, its origin and the rule."""

    def __init__(self, mixer: str, origin: str, rule: str):
        self.mixer, self.origin, self.rule = mixer, origin, rule
        super().__init__(f"mixer {mixer!r} ({origin}) breaks its contract: {rule}")

    def __reduce__(self):
        return type(self), (self.mixer, self.origin, self.rule)


class _Broken(Exception):
    """A rule the mixer under probe broke (internal: becomes a ContractError)."""


def mixer_origin(name: str) -> str:
    """Where mixer ``name`` comes from: ``built-in``, ``plugin my_mixers.py``, or ``module m``."""
    module = get_mixer_info(name).module
    if module.split(".")[0] == __name__.split(".")[0]:
        return "built-in"
    plugin = plugin_of(module)
    return f"plugin {plugin}" if plugin is not None else f"module {module}"


def check_mixer(name: str, params: Optional[dict] = None, *, dim: int, causal: bool, grid: bool = False) -> None:
    """Check mixer ``name`` built as ``cls(dim, causal=causal, **params)`` (registry defaults for
    the parameters not given; ``grid=True`` for a grid-aware mixer on an image task) against its
    contract; ContractError naming the rule it breaks. Each configuration is probed once."""
    info = get_mixer_info(name)
    params = {**info.defaults(), **(params or {})}
    cls = info.cls
    key = (cls, tuple(sorted(params.items())), dim, causal, grid)
    if key not in _CHECKED:
        _CHECKED[key] = _broken_rule(cls, params, dim=dim, causal=causal, grid=grid)
    if _CHECKED[key] is not None:
        built = ", ".join(f"{k}={v!r}" for k, v in {"dim": dim, "causal": causal, **params}.items())
        raise ContractError(name, mixer_origin(name), f"{_CHECKED[key]} (built with {built})")


def check_space_mixers(space: Space) -> None:
    """Check every mixer ``space`` (bound to its task) names: a plugin's with each parameter value
    the space allows (:func:`probe_params`), a built-in one with the first of them only (the test
    suite probes the built-ins' parameter values one at a time; loading all built-in spaces stays fast).
    SpaceError at ``arch.stages[i].mixer.<group>.<mixer>`` whose message is the ContractError's line."""
    for si, stage in enumerate(space.stages):
        for group, choice in _mixer_choices(stage):
            probes = probe_params(stage, choice)
            for dim, params in probes[:1] if mixer_origin(choice.type) == "built-in" else probes:
                try:
                    check_mixer(choice.type, params, dim=dim, causal=space.io.causal, grid=space.io.kind == "image")
                except ContractError as e:
                    raise SpaceError(space.source, f"arch.stages[{si}].mixer.{group}.{choice.type}", str(e)) from None


def _mixer_choices(stage: StageChoices) -> Iterator[tuple[str, MixerChoice]]:
    for group, choices in (("choices", stage.mixers), ("a", stage.mixers_a), ("b", stage.mixers_b)):
        yield from ((group, m) for m in choices)


def probe_params(stage: StageChoices, choice: MixerChoice) -> list[tuple[int, dict]]:
    """(width, parameters) pairs to probe ``choice`` with: valid combinations, smallest width
    first, until every value of every parameter the stage allows has been probed once."""
    seen, out = set(), []
    heads = sorted({stage.heads_for(d) for d in stage.depth}, key=lambda h: -1 if h is None else h)
    for dim in sorted(stage.dim):
        for h in heads:
            for params in valid_params(choice, dim, h):
                if not out or not set(params.items()) <= seen:
                    seen |= set(params.items())
                    out.append((dim, params))
    return out


def _broken_rule(cls: type, params: dict, *, dim: int, causal: bool, grid: bool) -> Optional[str]:
    """The first rule the mixer breaks, or None. The global RNG and thread count are left as they
    were (one thread: on tensors this small, threads only wait for each other, badly so on a busy
    machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(0)
            layout = {"grid": grid} if getattr(cls, "grid_aware", False) else {}
            mixer = _call("building it", cls, dim, causal=causal, **layout, **params)
            _check_forward_and_gradients(mixer, dim, grid)
            if causal:
                _check_causal(mixer, dim)
    except _Broken as e:
        return str(e)
    finally:
        torch.set_num_threads(threads)
    return None


def _call(what: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; whatever it raises but KeyboardInterrupt (SystemExit included)
    is a broken rule."""
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        raise _Broken(f"{what} raises {failure_reason(e)}") from None


def _forward(mixer, x: torch.Tensor, grid: bool) -> torch.Tensor:
    """The mixer's output on ``x``, checked: a tensor of x's shape and dtype, finite."""
    hw = GRID if grid else None
    y = _call("forward", mixer, x, hw=hw)
    if not isinstance(y, torch.Tensor):
        raise _Broken(f"forward returns {type(y).__name__}, not a tensor")
    if tuple(y.shape) != tuple(x.shape):
        raise _Broken(f"output shape {tuple(y.shape)} is not the input's {tuple(x.shape)}")
    if y.dtype != x.dtype:
        raise _Broken(f"output dtype {y.dtype} is not the input's {x.dtype}")
    if not torch.isfinite(y).all():
        raise _Broken("output is not finite (NaN or inf) on a finite input")
    return y


def _check_forward_and_gradients(mixer, dim: int, grid: bool) -> None:
    """Output as promised (train mode); a loss on it gives every trainable parameter a finite gradient."""
    mixer.train()
    x = torch.randn(BATCH, TOKENS, dim, requires_grad=True)
    y = _forward(mixer, x, grid)
    if not y.requires_grad:
        raise _Broken("its output carries no gradient (detached from its input and parameters)")
    _call("backward", y.pow(2).mean().backward)
    for pname, p in mixer.named_parameters():
        if p.requires_grad and p.grad is None:
            raise _Broken(f"parameter {pname!r} gets no gradient")
        if p.requires_grad and not torch.isfinite(p.grad).all():
            raise _Broken(f"parameter {pname!r} gets a non-finite gradient")


def _check_causal(mixer, dim: int) -> None:
    """Declared causal: replacing input position j changes no output before j. Row j of one batch
    has position j replaced by noise; rows 0 and TOKENS are the unchanged input."""
    mixer.eval()
    x = torch.randn(1, TOKENS, dim).repeat(TOKENS + 1, 1, 1)  # (TOKENS + 1, N, C)
    j = torch.arange(1, TOKENS)
    x[j, j] = torch.randn(TOKENS - 1, dim) * NOISE
    with torch.no_grad():
        y = _forward(mixer, x, grid=False)
    tol = TOLERANCE * (1 + y[0].abs().max().item())
    moved = (y - y[:1]).abs().amax(-1) > tol  # (rows, positions): output differs from row 0's
    if moved[TOKENS].any():
        raise _Broken("declared causal, but its causality cannot be probed: in eval mode it gives different "
                      "outputs for the same input")
    for j in range(1, TOKENS):
        before = moved[j, :j].nonzero()
        if len(before):
            raise _Broken(f"declared causal, but output position {int(before[-1])} depends on input position {j}")
