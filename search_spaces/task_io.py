"""What a model must consume and produce for a task (declared by the task, read by the builder)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TaskIO", "STEM_FOR_KIND"]

# which stem turns each kind of input into tokens
STEM_FOR_KIND = {"tokens": "embed", "signal": "patch1d", "image": "patch2d"}


@dataclass(frozen=True)
class TaskIO:
    """Inputs and outputs of a task.

    kind: "tokens" (int ids, shape (B, N)), "signal" (float, (B, C, N)) or "image" (float, (B, C, H, W)).
    per_token: one prediction per input position (e.g. next-token recall) rather than one per sample.
    """

    kind: str
    num_classes: int
    seq_len: int = 0  # tokens / signal length
    image_size: tuple = (0, 0)  # (H, W) for images
    vocab_size: int = 0  # tokens
    in_channels: int = 1  # signal / image channels
    causal: bool = False
    per_token: bool = False
    metric: str = "accuracy"

    def __post_init__(self):
        if self.kind not in STEM_FOR_KIND:
            raise ValueError(f"TaskIO.kind {self.kind!r} is not one of {sorted(STEM_FOR_KIND)}")
        object.__setattr__(self, "image_size", tuple(self.image_size))

    def input_shape(self, batch: int) -> tuple:
        if self.kind == "tokens":
            return (batch, self.seq_len)
        if self.kind == "signal":
            return (batch, self.in_channels, self.seq_len)
        return (batch, self.in_channels, *self.image_size)
