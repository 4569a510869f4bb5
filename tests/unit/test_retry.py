from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from dagrelay.engine.retry import RetryPolicy, backoff_delay, next_attempt_at
from dagrelay.errors import NonRetryableError

NOW = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 10.0), (2, 30.0), (3, 90.0), (4, 100.0), (10, 100.0)],
)
def test_backoff_is_exponential_and_capped(attempt: int, expected: float) -> None:
    policy = RetryPolicy(max_retries=10, delay_s=10, backoff=3, max_delay_s=100, jitter=0)
    assert backoff_delay(policy, attempt, random.Random(0)) == expected


def test_jitter_stays_within_its_fraction_and_the_cap() -> None:
    policy = RetryPolicy(max_retries=5, delay_s=10, backoff=2, max_delay_s=25, jitter=0.2)
    rng = random.Random(42)
    first = [backoff_delay(policy, 1, rng) for _ in range(500)]
    capped = [backoff_delay(policy, 5, rng) for _ in range(500)]
    assert all(8.0 <= d <= 12.0 for d in first)
    assert len(set(first)) > 100  # it really varies
    assert all(20.0 <= d <= 25.0 for d in capped)


def test_same_seed_same_delays() -> None:
    policy = RetryPolicy(max_retries=3, delay_s=5)
    a = [backoff_delay(policy, n, random.Random(7)) for n in (1, 2, 3)]
    b = [backoff_delay(policy, n, random.Random(7)) for n in (1, 2, 3)]
    assert a == b


@pytest.mark.parametrize(
    ("attempt", "error", "retries"),
    [
        (1, RuntimeError("flaky"), True),
        (2, RuntimeError("flaky"), True),
        (3, RuntimeError("flaky"), False),  # max_retries=2: attempts 1..3, then ERROR
        (1, NonRetryableError("bad params"), False),
    ],
)
def test_next_attempt(attempt: int, error: BaseException, retries: bool) -> None:
    policy = RetryPolicy(max_retries=2, delay_s=60, backoff=2, max_delay_s=600, jitter=0)
    at = next_attempt_at(policy, attempt, error, NOW, random.Random(0))
    if retries:
        assert at == NOW + timedelta(seconds=60 * 2 ** (attempt - 1))
    else:
        assert at is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_retries": -1},
        {"delay_s": -1},
        {"backoff": 0.5},
        {"delay_s": 10, "max_delay_s": 5},
        {"jitter": -0.1},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"retry policy|max_delay_s"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
