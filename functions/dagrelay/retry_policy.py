"""A task's retry policy as a value: the store reads it from the task's row, the engine's retry
decisions (``dagrelay.engine.retry``) apply it."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_JITTER = 0.1  # +-10% of the delay, so failed siblings do not retry in lockstep


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 0
    delay_s: float = 30.0
    backoff: float = 2.0
    max_delay_s: float = 3600.0
    jitter: float = DEFAULT_JITTER

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.delay_s < 0 or self.backoff < 1 or self.jitter < 0:
            raise ValueError(f"invalid retry policy {self}")
        if self.max_delay_s < self.delay_s:
            raise ValueError(f"max_delay_s is below delay_s in {self}")
