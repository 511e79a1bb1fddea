"""Stochastically subsampled attention (SSA, Information Pathways): sparse in training, full at inference."""

from __future__ import annotations

import torch

import kernels
from search_spaces.mixers.softmax import SoftmaxAttention


class SubsampledAttention(SoftmaxAttention):
    """Stochastically Subsampled self-Attention (Hussain, Zaki & Subramanian, KDD 2023).

    Training: for every sample, the tokens are shuffled at random and cut into ``groups`` disjoint
    subsets of near-equal size (sizes differ by at most one); each token attends only to the tokens of
    its own subset, so each step trains a random sparse sub-network ("information pathway") and the
    attention cost shrinks by about ``groups``. Tokens keep their original order inside a subset, so
    causal mode masks correctly and every query sees at least itself. Inference (``eval()``): dense
    multi-head attention, identical to ``softmax`` with the same weights (same ``qkv``/``proj``
    layout). The paper's locally biased sampling for generative models is not implemented; this is
    its unbiased (uniform) sampling.
    """

    def __init__(self, dim: int, *, causal: bool = False, heads: int = 4, groups: int = 2, qkv_bias: bool = False):
        super().__init__(dim, causal=causal, heads=heads, qkv_bias=qkv_bias)  # the same weights as softmax
        self.groups = groups

    def _attend_subsets(self, q, k, v):
        """q, k, v (B, h, N, hd) -> (B, h, N, hd), attention restricted to random token subsets."""
        B, h, N, hd = q.shape
        g = min(self.groups, N)
        perm = torch.rand(B, N, device=q.device).argsort(dim=1)  # (B, N) random order per sample
        size, extra = divmod(N, g)  # the first `extra` subsets get one more token
        out = torch.empty_like(q)
        start = 0
        for n_sub, sub_len in ((extra, size + 1), (g - extra, size)):
            if n_sub == 0:
                continue
            stop = start + n_sub * sub_len
            idx = perm[:, start:stop].reshape(B, n_sub, sub_len).sort(dim=-1).values  # keep token order
            idx = idx.reshape(B, 1, n_sub * sub_len, 1).expand(B, h, -1, hd)
            # gather the subsets: (B, h, n_sub*L, hd) -> (B, h, n_sub, L, hd) -> (B*n_sub, h, L, hd)
            sub = [t.gather(2, idx).view(B, h, n_sub, sub_len, hd).transpose(1, 2).reshape(B * n_sub, h, sub_len, hd)
                   for t in (q, k, v)]
            y = kernels.attention(*sub, causal=self.causal)  # (B*n_sub, h, L, hd)
            y = y.view(B, n_sub, h, sub_len, hd).transpose(1, 2).reshape(B, h, n_sub * sub_len, hd)
            out.scatter_(2, idx, y)
            start = stop
        return out

    def forward(self, x, hw=None):  # decode_state and decoding: softmax's (full attention at inference)
        B, N, C = x.shape
        q, k, v = self._qkv(x)
        if self.training and self.groups > 1:
            y = self._attend_subsets(q, k, v)
        else:
            y = kernels.attention(q, k, v, causal=self.causal)  # (B, h, N, hd)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))
