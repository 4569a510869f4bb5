"""One exception root. Subclasses carry the ids a caller needs and say whether a retry can help."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

REGISTER_HINT = (
    "register it with @handler({name!r}) in a module named in DAGRELAY_HANDLER_MODULES "
    "(comma-separated), or in the 'dagrelay.handlers' entry-point group"
)


class DagrelayError(Exception):
    """Base of every error dagrelay raises on purpose."""

    retryable = True


class NonRetryableError(DagrelayError):
    """A failure that another attempt cannot fix (bad params, a missing table, a failed check)."""

    retryable = False


class SkipTask(NonRetryableError):
    """Raised by a handler (or its poll) to end its task SKIPPED rather than ERROR, with this
    text as the reason: e.g. a sensor whose wait timed out with ``on_timeout: skip``. Its
    children are decided as for any skipped parent; no alert. (An instance of a mapped task
    cannot be skipped: it ends ERROR.)"""


class WaitCancelled(NonRetryableError):
    """A waiting attempt (a sensor) whose batch was cancelled: it ends CANCELLED, unpolled."""


class LeaseExpired(DagrelayError):
    """An attempt's lease ran out: its function was killed, or its handler hung."""


class ConfigError(NonRetryableError):
    """The configuration file or environment is invalid."""


class BadMessage(NonRetryableError):
    """A Pub/Sub message that can never be processed: it is recorded and acknowledged."""

    def __init__(self, reason: str, *, message_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message_id = message_id


class PipelineError(NonRetryableError):
    """A pipeline definition is invalid (cycle, unknown handler, unknown parent, ...)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class UnknownHandler(NonRetryableError):
    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        super().__init__(f"no handler registered under {name!r}: {handler_hint(name, known)}")
        self.name = name


def handler_hint(name: str, known: Iterable[str]) -> str:
    """What to do about an unknown handler: the closest registered names, and how to register."""
    close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.8)
    guess = f"did you mean {' or '.join(repr(c) for c in close)}? else " if close else ""
    return guess + REGISTER_HINT.format(name=name)


class PoolExhausted(DagrelayError):
    """No pooled database connection came free in time: more transactions were in flight on
    this instance than its pool holds. Retryable: the delivery fails and Pub/Sub redelivers."""

    def __init__(self, size: int, overflow: int, timeout_s: float) -> None:
        super().__init__(
            f"no database connection came free within {timeout_s:g} s: all {size} + {overflow} "
            f"connections of this instance's pool are in transactions (db_pool_size, "
            f"db_max_overflow, db_pool_timeout_s; the capacity model in ARCHITECTURE.md says how "
            f"to size them against the request concurrency and the database's connection limit)"
        )
        self.size = size
        self.overflow = overflow
        self.timeout_s = timeout_s
