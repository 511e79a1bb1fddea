"""ArchSpec + TaskIO -> torch.nn.Module."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from search_spaces.arch import ArchSpec, ArchValidationError, BlockSpec
from search_spaces.ffn import build_ffn
from search_spaces.mixer import MixerCache
from search_spaces.mixer_registry import get_mixer
from search_spaces.task_io import STEM_FOR_KIND, TaskIO

__all__ = ["Block", "DecodeCache", "NASModel", "build_model", "check_compatible"]


class Block(nn.Module):
    """Residual block: mixer then FFN, each with a LayerNorm before (pre) or after (post)."""

    def __init__(self, dim: int, spec: BlockSpec, causal: bool, grid: bool = False):
        super().__init__()
        self.post = spec.norm == "post"
        self.norm1 = nn.LayerNorm(dim)
        cls = get_mixer(spec.mixer.type)
        layout = {"grid": grid} if cls.grid_aware else {}
        self.mixer = cls(dim, causal=causal, **layout, **spec.mixer.params)
        self.ffn = build_ffn(spec.ffn.type, dim, spec.ffn.ratio)
        self.norm2 = nn.LayerNorm(dim) if self.ffn is not None else None

    def forward(self, x, hw=None):
        return self._run(x, lambda h: (self.mixer(h, hw), None))[0]

    def prefill(self, x, cache: MixerCache):
        """Forward over the first tokens of a sequence; returns (out, the mixer's cache after them)."""
        return self._run(x, lambda h: self.mixer.prefill(h, cache))

    def step(self, x, cache: MixerCache):
        """One token (B, 1, C) at position ``cache.pos``; returns (out, the mixer's next cache)."""
        return self._run(x, lambda h: self.mixer.step(h, cache))

    def _run(self, x, mix):
        """The block around ``mix(h) -> (mixer output, extra)``; returns (out, extra)."""
        if self.post:
            y, extra = mix(x)
            x = self.norm1(x + y)
            if self.ffn is not None:
                x = self.norm2(x + self.ffn(x))
            return x, extra
        y, extra = mix(self.norm1(x))
        x = x + y
        if self.ffn is not None:
            x = x + self.ffn(self.norm2(x))
        return x, extra


class Downsample(nn.Module):
    """Halve the token count (1-D) or each grid side (2-D) and change the width.

    merge: concatenate neighbouring tokens (2 in 1-D, 2x2 in 2-D) then a linear layer (Swin's patch
    merging); conv: a stride-2 convolution (kernel 3). Odd lengths are padded by one token.
    """

    def __init__(self, kind: str, dim_in: int, dim_out: int, two_d: bool):
        super().__init__()
        self.kind, self.two_d = kind, two_d
        if kind == "merge":
            self.norm = nn.LayerNorm(dim_in * (4 if two_d else 2))
            self.proj = nn.Linear(dim_in * (4 if two_d else 2), dim_out)
        else:
            conv = nn.Conv2d if two_d else nn.Conv1d
            self.proj = conv(dim_in, dim_out, 3, stride=2, padding=1)

    def forward(self, x, hw):
        B, N, C = x.shape
        if not self.two_d:
            if self.kind == "merge":
                if N % 2:
                    x = torch.cat([x, x[:, -1:]], dim=1)
                x = x.reshape(B, -1, 2 * C)  # (B, N/2, 2C)
                return self.proj(self.norm(x)), None
            y = self.proj(x.transpose(1, 2))  # (B, C', ceil(N/2))
            return y.transpose(1, 2), None
        H, W = hw
        g = x.transpose(1, 2).reshape(B, C, H, W)  # (B, C, H, W)
        if self.kind == "merge":
            g = nn.functional.pad(g, (0, W % 2, 0, H % 2), mode="replicate")
            H2, W2 = g.shape[-2] // 2, g.shape[-1] // 2
            # (B, C, H2, 2, W2, 2) -> (B, H2, W2, 2*2*C)
            g = g.reshape(B, C, H2, 2, W2, 2).permute(0, 2, 4, 3, 5, 1).reshape(B, H2 * W2, 4 * C)
            return self.proj(self.norm(g)), (H2, W2)
        g = self.proj(g)  # (B, C', H2, W2)
        H2, W2 = g.shape[-2:]
        return g.flatten(2).transpose(1, 2), (H2, W2)


@dataclass(frozen=True)
class DecodeCache:
    """A token model's decoding state after ``pos`` tokens: one :class:`MixerCache` per block, in
    order. The cache a step started from stays valid and may be stepped again (see
    :class:`MixerCache`)."""

    pos: int
    max_len: int
    mixers: tuple

    def state_bytes(self) -> int:
        """Per-sequence bytes of all mixers' state (KV caches, recurrent sums, windows, histories)."""
        return sum(c.state_bytes() for c in self.mixers)


class NASModel(nn.Module):
    """Stem -> stages of blocks (optional downsampling / width change between stages) -> head.

    tokens: embedding + learned positions; per-token logits (causal tasks) or pooled logits.
    Causal token models also decode incrementally: :meth:`prefill`, then :meth:`decode_step`.
    signal: Conv1d patch stem; image: Conv2d patch stem; pooled (mean over tokens) logits.
    """

    def __init__(self, arch: ArchSpec, io: TaskIO):
        super().__init__()
        self.arch, self.io = arch, io
        stem = arch.stem
        d0 = arch.stages[0].dim
        if io.kind == "tokens":
            self.embed = nn.Embedding(io.vocab_size, d0)
            self.pos = nn.Parameter(torch.zeros(1, io.seq_len, d0))
            nn.init.normal_(self.pos, std=0.02)
        elif io.kind == "signal":
            self.embed = nn.Conv1d(io.in_channels, d0, stem.patch, stride=stem.effective_stride)
            n = (io.seq_len - stem.patch) // stem.effective_stride + 1
            self.pos = nn.Parameter(torch.zeros(1, n, d0))
            nn.init.normal_(self.pos, std=0.02)
        else:
            self.embed = nn.Conv2d(io.in_channels, d0, stem.patch, stride=stem.effective_stride)
            self.pos = None  # 2-D mixers see the grid through hw; convs/windows are position-aware
        self.stages = nn.ModuleList()
        self.transitions = nn.ModuleList()
        prev = d0
        for stage in arch.stages:
            if stage.downsample != "none":
                self.transitions.append(Downsample(stage.downsample, prev, stage.dim, io.kind == "image"))
            elif stage.dim != prev:
                self.transitions.append(nn.Linear(prev, stage.dim))
            else:
                self.transitions.append(nn.Identity())
            self.stages.append(nn.ModuleList(Block(stage.dim, b, arch.causal, grid=io.kind == "image")
                                             for b in stage.blocks))
            prev = stage.dim
        self.norm = nn.LayerNorm(prev)
        self.head = nn.Linear(prev, io.num_classes)

    def forward(self, x):
        x, hw = self.embed_input(x)
        for transition, blocks in zip(self.transitions, self.stages):
            if isinstance(transition, Downsample):
                x, new_hw = transition(x, hw)
                hw = new_hw
            else:
                x = transition(x)
            for block in blocks:
                x = block(x, hw)
        return self.readout(x)

    def embed_input(self, x):
        """The stem: inputs -> tokens ``(B, N, C)`` and the grid ``hw`` (images; None otherwise)."""
        if self.io.kind == "tokens":
            return self.embed(x) + self.pos[:, : x.shape[1]], None  # (B, N, C)
        if self.io.kind == "signal":
            x = self.embed(x).transpose(1, 2)  # (B, N', C)
            return x + self.pos[:, : x.shape[1]], None
        g = self.embed(x)  # (B, C, H', W')
        return g.flatten(2).transpose(1, 2), tuple(g.shape[-2:])  # (B, H'W', C)

    def readout(self, x):
        """The head: final norm, then per-token logits ``(B, N, classes)`` or pooled ``(B, classes)``."""
        x = self.norm(x)
        if self.io.per_token:
            return self.head(x)  # (B, N, classes)
        return self.head(x.mean(dim=1))  # (B, classes)

    # ------------------------------------------------------------------ incremental decoding
    # Causal token models only. prefill(x) gives forward(x)'s logits and a cache; each
    # decode_step(token, cache) gives the logits of the next position, as forward would over the
    # whole sequence (length-dependent mixers treat max_len as the sequence length; by default
    # the task's seq_len, also the reach of the learned positions).
    def init_cache(self, batch: int, max_len: int | None = None) -> DecodeCache:
        """An empty cache for ``batch`` sequences of up to ``max_len`` (default seq_len) tokens."""
        if not (self.io.kind == "tokens" and self.io.per_token and self.arch.causal):
            raise ValueError(f"decoding needs a causal per-token model on tokens; this one reads {self.io.kind} "
                             f"(causal={self.arch.causal}, per_token={self.io.per_token})")
        max_len = self.io.seq_len if max_len is None else max_len
        if not 1 <= max_len <= self.io.seq_len:
            raise ValueError(f"max_len {max_len} is not between 1 and the learned positions ({self.io.seq_len})")
        caches = tuple(b.mixer.init_cache(batch, max_len) for blocks in self.stages for b in blocks)
        return DecodeCache(0, max_len, caches)

    def prefill(self, x: torch.Tensor, max_len: int | None = None) -> tuple[torch.Tensor, DecodeCache]:
        """Logits (B, n, classes) of the prompt ``x`` (B, n) and the cache after it."""
        cache = self.init_cache(x.shape[0], max_len)
        if x.shape[1] > cache.max_len:
            raise ValueError(f"a prompt of {x.shape[1]} tokens is longer than max_len {cache.max_len}")
        return self._decode(x, cache, "prefill")

    def decode_step(self, token: torch.Tensor, cache: DecodeCache) -> tuple[torch.Tensor, DecodeCache]:
        """Logits (B, classes) at position ``cache.pos`` given its token (B,), and the next cache."""
        if cache.pos >= cache.max_len:
            raise ValueError(f"the cache is full ({cache.max_len} tokens)")
        logits, cache = self._decode(token.view(-1, 1), cache, "step")
        return logits[:, 0], cache

    def _decode(self, tokens, cache: DecodeCache, method: str):
        p, n = cache.pos, tokens.shape[1]
        x = self.embed(tokens) + self.pos[:, p : p + n]  # (B, n, C)
        caches = iter(cache.mixers)
        new = []
        for transition, blocks in zip(self.transitions, self.stages):
            x = transition(x)  # Identity or Linear: per-token tasks never downsample
            for block in blocks:
                x, c = getattr(block, method)(x, next(caches))
                new.append(c)
        return self.head(self.norm(x)), DecodeCache(p + n, cache.max_len, tuple(new))


def check_compatible(arch: ArchSpec, io: TaskIO) -> None:
    """Raise ArchValidationError if ``arch`` cannot serve the task's I/O."""
    want = STEM_FOR_KIND[io.kind]
    if arch.stem.type != want:
        raise ArchValidationError("stem.type", f"{arch.stem.type} cannot read {io.kind} inputs; use {want}")
    if arch.causal != io.causal:
        raise ArchValidationError("causal", f"the task is {'causal' if io.causal else 'non-causal'} but the arch says causal={arch.causal}")
    if io.per_token and any(s.downsample != "none" for s in arch.stages):
        raise ArchValidationError("stages", "a per-token task cannot downsample tokens")
    if io.kind == "signal" and arch.stem.patch > io.seq_len:
        raise ArchValidationError("stem.patch", f"{arch.stem.patch} is longer than the signal ({io.seq_len})")
    if io.kind == "image" and arch.stem.patch > min(io.image_size):
        raise ArchValidationError("stem.patch", f"{arch.stem.patch} is larger than the image {io.image_size}")


def build_model(arch: ArchSpec, io: TaskIO) -> NASModel:
    """Validate ``arch`` against the registry and the task, then build the model."""
    arch.validate()
    check_compatible(arch, io)
    return NASModel(arch, io)
