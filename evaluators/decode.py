"""Measured per-token decode latency of causal token models (``decode_ms``).

Where ``latency_ms`` times the parallel forward over the task's whole sequence (prefill), a
generating model pays ``decode_ms`` for every further token: one :meth:`NASModel.decode_step`
through the embedding, every block (mixer against its KV cache / recurrent state / window /
long-conv history, FFN, norms) and the head. Timed like latency (same :class:`LatencyConfig`,
threads, warm-up and rounds until the spread is small; see :func:`evaluators.latency.time_calls`).
"""

from __future__ import annotations

import torch

from evaluators.latency import LatencyConfig, on_device, time_calls, torch_threads
from search_spaces.task_io import TaskIO

__all__ = ["measure_decode"]


@torch.inference_mode()
def measure_decode(model: torch.nn.Module, io: TaskIO, cfg: LatencyConfig | None = None) -> dict:
    """Median time to decode one token at the end of a ``io.seq_len``-token sequence, for a batch
    of ``cfg.batch_size`` sequences.

    The prompt (``example_input``'s tokens) is prefilled up to position seq_len - 2; each timed
    call is one ``decode_step`` of the last token, position seq_len - 1, from that same cache, so
    every call sees a full context of seq_len - 1 tokens and the cache never grows. No copy or reset
    is needed between calls: a step writes only its own position and leaves the cache it started
    from valid. Positions past seq_len are not timed: the learned position embedding and the
    length-dependent mixers (Hyena's filters, cosFormer's horizon) end at the task's length.

    Returns decode_ms (median), decode_mad_ms, decode_spread (MAD / median), decode_ci (the
    median's 95% confidence interval half-width / median), decode_ci_low and decode_ci_high (that
    interval's ends, ms), decode_runs,
    decode_rounds and decode_converged. Raises ValueError for models that do not decode
    (non-causal, or not a token task).
    """
    cfg = cfg if cfg is not None else LatencyConfig()
    if not (io.kind == "tokens" and io.causal and io.per_token):
        raise ValueError(f"decode_ms needs a causal per-token task on tokens; this task reads {io.kind} "
                         f"(causal={io.causal})")
    cuda = cfg.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise ValueError(f"latency.device is {cfg.device!r} but no CUDA device is available")
    model, tokens = on_device(model, io, cfg)  # tokens (B, seq_len)
    try:
        with torch_threads(cfg.threads):
            _, cache = model.prefill(tokens[:, :-1])
            last = tokens[:, -1]
            timed = time_calls([lambda: model.decode_step(last, cache)], cfg)
    finally:
        if cuda:
            model.to("cpu", torch.float32)
    return timed.summary("decode")
