"""One exception root. Subclasses carry the ids a caller needs and say whether a retry can help."""

from __future__ import annotations


class DagrelayError(Exception):
    """Base of every error dagrelay raises on purpose."""

    retryable = True


class NonRetryableError(DagrelayError):
    """A failure that another attempt cannot fix (bad params, a missing table, a failed check)."""

    retryable = False


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
    def __init__(self, name: str) -> None:
        super().__init__(f"no handler registered under {name!r}")
        self.name = name
