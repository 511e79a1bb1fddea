"""Sampling from a causal token model: ``nas.generate(model, "def ", 200)``.

The model sees at most its task's context (``model.io.seq_len`` tokens, the reach of its learned
positions); past that, each new token is predicted from the last ``seq_len`` tokens. Every
mixer is run the same way, through ``forward``, so what is sampled is what the trained model
computes. Byte-level models (a vocabulary of 256, as the ``text`` task's) take and
return text; any causal token model takes and returns token ids.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

__all__ = ["generate"]


def _check_model(model) -> None:
    io = getattr(model, "io", None)
    if io is None or io.kind != "tokens" or not io.per_token or not io.causal:
        raise ValueError("generate needs a causal per-token model on tokens (a model of a causal "
                         f"language-modelling task); this one has I/O {io}")


def _prompt_ids(prompt, vocab: int) -> tuple[list[int], bool]:
    """(token ids, prompt was text)."""
    if isinstance(prompt, (str, bytes)):
        if vocab != 256:
            raise ValueError(f"a text prompt needs a byte-level model (a vocabulary of 256); this one has {vocab}")
        data = prompt.encode("utf-8") if isinstance(prompt, str) else prompt
        return list(data), True
    ids = [int(t) for t in (prompt.tolist() if isinstance(prompt, torch.Tensor) else prompt)]
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"token {bad[0]} is outside the vocabulary [0, {vocab})")
    return ids, False


@torch.no_grad()
def generate(model, prompt: Union[str, bytes, Sequence[int], torch.Tensor], n: int, *, temperature: float = 0.8,
             top_k: Optional[int] = None, seed: int = 0) -> Union[str, list]:
    """The prompt followed by ``n`` sampled tokens. ``temperature`` 0 takes the most likely token;
    ``top_k`` keeps only the k most likely. Text in, text out (bytes decoded as UTF-8, invalid
    sequences replaced); token ids in, token ids out. Seeded: the same call gives the same text."""
    _check_model(model)
    if n < 0 or temperature < 0 or (top_k is not None and top_k < 1):
        raise ValueError(f"need n >= 0, temperature >= 0 and top_k >= 1; got n={n}, temperature={temperature}, top_k={top_k}")
    ids, text = _prompt_ids(prompt, model.io.vocab_size)
    if not ids:
        raise ValueError("the prompt is empty; give at least one token")
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for _ in range(n):
            window = torch.tensor([ids[-model.io.seq_len:]], device=device)  # (1, <= seq_len)
            logits = model(window)[0, -1].float().cpu()  # (vocab,)
            ids.append(_pick(logits, temperature, top_k, g))
    finally:
        model.train(was_training)
    return bytes(ids).decode("utf-8", errors="replace") if text else ids


def _pick(logits: torch.Tensor, temperature: float, top_k: Optional[int], g: torch.Generator) -> int:
    if temperature == 0:
        return int(logits.argmax())
    if top_k is not None and top_k < logits.numel():
        cut = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < cut, float("-inf"))
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=g))
