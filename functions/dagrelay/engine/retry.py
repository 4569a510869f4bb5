"""Retry decisions: pure functions of the task's policy, the failed attempt and the error."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from dagrelay.errors import NonRetryableError

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


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential, capped,
    with jitter; never above max_delay_s and never negative."""
    base = min(policy.max_delay_s, policy.delay_s * policy.backoff ** (attempt - 1))
    spread = base * policy.jitter
    return max(0.0, min(policy.max_delay_s, base + rng.uniform(-spread, spread)))


def next_attempt_at(
    policy: RetryPolicy,
    attempt: int,
    error: BaseException | None,
    now: datetime,
    rng: random.Random,
) -> datetime | None:
    """When to try again after ``attempt`` failed with ``error``; None: fail now (ERROR)."""
    if isinstance(error, NonRetryableError) or attempt > policy.max_retries:
        return None
    return now + timedelta(seconds=backoff_delay(policy, attempt, rng))
