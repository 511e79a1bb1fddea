"""Errors raised while evaluating one candidate. They become FAIL trials with the reason stored."""


class TrialFailure(RuntimeError):
    """The candidate could not be evaluated; ``str(e)`` is the reason stored on the trial."""


class NonFiniteLoss(TrialFailure):
    """The training loss became NaN or infinite."""


class OutOfMemory(TrialFailure):
    """The candidate ran out of memory while being built, trained or timed."""


class TooLarge(OutOfMemory):
    """The candidate would not fit in this machine's memory (``evaluators.model_memory``): refused
    before anything was allocated."""
