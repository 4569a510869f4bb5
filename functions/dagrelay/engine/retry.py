"""Retry decisions: pure functions of the task's policy, the failed attempt and the error."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from dagrelay.errors import NonRetryableError
from dagrelay.retry_policy import DEFAULT_JITTER, RetryPolicy

__all__ = ["DEFAULT_JITTER", "RetryPolicy", "backoff_delay", "next_attempt_at"]


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
