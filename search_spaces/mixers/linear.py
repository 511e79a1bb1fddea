"""Kernelized (linear) attention: ELU+1 feature map, optional cosFormer re-weighting."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
from search_spaces.mixer import Mixer, split_qkv
from search_spaces.mixers.rules import LINEAR_FEATURES

# elu(x) + 1: Katharopoulos et al. 2020, "Transformers are RNNs"; relu: cosFormer's choice
_FEATURES = dict(zip(LINEAR_FEATURES, (lambda t: F.elu(t) + 1.0, F.relu), strict=True))


def cos_reweight(phi: torch.Tensor, horizon: int, start: int = 0) -> torch.Tensor:
    """cosFormer features: (..., N, D) -> (..., N, 2D) = [phi_i cos(a_i), phi_i sin(a_i)].

    With a_i = pi/2 * i / horizon, the dot product of the features of i and j is
    phi_i . phi_j * cos(a_i - a_j) (Ptolemy: cos(a - b) = cos a cos b + sin a sin b), i.e. the
    re-weighting cos(pi/2 * (i - j) / horizon) of the kernel, still a product of per-token
    features and so still linear in N. For 0 <= i, j < horizon the angle stays in [0, pi/2], so
    the features (and the weights) stay non-negative. The N rows are positions start..start+N-1.
    """
    n = phi.shape[-2]
    pos = torch.arange(start, start + n, device=phi.device, dtype=torch.float32)
    a = (math.pi / 2) * pos / horizon  # (N,), fp32 positions
    cos, sin = torch.cos(a).to(phi.dtype)[:, None], torch.sin(a).to(phi.dtype)[:, None]
    return torch.cat([phi * cos, phi * sin], dim=-1)


class LinearAttention(Mixer):
    """Kernelized attention: out_i = sum_j w_ij phi(q_i).phi(k_j) v_j / sum_j w_ij phi(q_i).phi(k_j).

    phi is elu(x) + 1 (Katharopoulos et al., "Transformers are RNNs", 2020) or relu; w_ij = 1, or
    with ``cosformer`` w_ij = cos(pi/2 (i - j) / N) (Qin et al., cosFormer, ICLR 2022), decomposed
    by Ptolemy's identity into per-token features (see :func:`cos_reweight`), so the cost stays
    O(N D^2) through ``kernels.linear_attention``: a (D, D) state (non-causal) or its prefix sums
    (causal: j <= i only). As in cosFormer the horizon is the sequence length N, which depends
    on the length only, never on the content of later tokens. On a grid (hw) positions are the
    row-major token indices.
    """

    def __init__(self, dim: int, *, causal: bool = False, heads: int = 4, feature: str = "elu",
                 cosformer: bool = False, qkv_bias: bool = False):
        super().__init__(dim, causal=causal)
        if dim % heads:
            raise ValueError(f"heads {heads} does not divide dim {dim}")
        if feature not in _FEATURES:
            raise ValueError(f"feature {feature!r} is not one of {sorted(_FEATURES)}")
        self.heads, self.head_dim = heads, dim // heads
        self.feature, self.cosformer = feature, cosformer
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def features(self, q: torch.Tensor, k: torch.Tensor, horizon: int | None = None,
                 start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature-mapped (and, with cosformer, re-weighted) queries and keys, (B, h, N, D'), for
        positions start..start+N-1 of a sequence of ``horizon`` tokens (default N)."""
        phi = _FEATURES[self.feature]
        q, k = phi(q), phi(k)
        if self.cosformer:
            n = horizon if horizon is not None else q.shape[-2]
            q, k = cos_reweight(q, n, start), cos_reweight(k, n, start)  # (B, h, N, 2hd)
        return q, k

    def decode_state(self, n: int) -> int:
        """Values a decoder keeps per sequence after ``n`` tokens: per head the running sums
        S = sum phi(k) v^T and z = sum phi(k) (phi doubles with cosFormer); constant in n."""
        f = 2 * self.head_dim if self.cosformer else self.head_dim
        return self.heads * (f * self.head_dim + f)

    def _qkv(self, x):
        """Project and split into heads: q, k, v each (B, h, N, hd)."""
        return split_qkv(self.qkv(x), self.heads, self.head_dim)

    def forward(self, x, hw=None):
        B, N, C = x.shape
        q, k, v = self._qkv(x)
        q, k = self.features(q, k)
        y = kernels.linear_attention(q, k, v, causal=self.causal)  # (B, h, N, hd)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))

    # Decoding: the recurrent form. S and z are kept in fp32 (as the kernels accumulate); the
    # cosFormer horizon is the cache's max_len and each token's angle comes from its position.
    _EPS = 1e-6  # kernels.linear_attention's

    def _init_cache(self, batch, max_len, device, dtype):
        f = 2 * self.head_dim if self.cosformer else self.head_dim
        return {"s": torch.zeros(batch, self.heads, f, self.head_dim, device=device),  # sum phi(k) v^T
                "z": torch.zeros(batch, self.heads, f, device=device)}, {}  # sum phi(k)

    def _prefill(self, x, cache):
        B, N, C = x.shape
        q, k, v = self._qkv(x)
        q, k = self.features(q, k, horizon=cache.max_len)
        y = kernels.linear_attention(q, k, v, causal=True, eps=self._EPS)  # (B, h, N, hd)
        kf = k.float()
        s = kf.transpose(-2, -1) @ v.float()  # (B, h, D', hd)
        return self.proj(y.transpose(1, 2).reshape(B, N, C)), cache.advanced(N, s=s, z=kf.sum(2))

    def _step(self, x, cache):
        B, _, C = x.shape
        q, k, v = self._qkv(x)  # (B, h, 1, hd)
        q, k = self.features(q, k, horizon=cache.max_len, start=cache.pos)
        qf, kf = q.float(), k.float()
        s = cache.state["s"] + kf.transpose(-2, -1) @ v.float()  # (B, h, D', hd)
        z = cache.state["z"] + kf[:, :, 0]  # (B, h, D')
        num = qf @ s  # (B, h, 1, hd)
        den = (qf[:, :, 0] * z).sum(-1)[..., None, None]  # (B, h, 1, 1)
        y = (num / (den + self._EPS)).to(v.dtype)
        return self.proj(y.transpose(1, 2).reshape(B, 1, C)), cache.advanced(s=s, z=z)
