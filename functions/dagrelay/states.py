"""The vocabularies: statuses, trigger rules and message actions, named once. Everything else in
Python uses these enums, never their strings (tests/unit/test_vocabulary.py); the database
enums are the source of truth for the statuses and trigger rules, and a test checks these equal
them (tests/integration/test_migrations.py). The OpenAPI document, the dashboard and the CLI's
colours are tested against them too."""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    NEW = "NEW"
    QUEUED = "QUEUED"  # waiting for a pool slot or its max_active (ARCHITECTURE.md, "Pools")
    PROCESSING = "PROCESSING"
    SUCCESS = "SUCCESS"
    RETRY = "RETRY"
    ERROR = "ERROR"
    UPSTREAM_FAILED = "UPSTREAM_FAILED"
    SKIPPED = "SKIPPED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_TASK_STATES

    @property
    def failed(self) -> bool:
        return self in (TaskStatus.ERROR, TaskStatus.UPSTREAM_FAILED)


TERMINAL_TASK_STATES = frozenset(
    {
        TaskStatus.SUCCESS,
        TaskStatus.ERROR,
        TaskStatus.UPSTREAM_FAILED,
        TaskStatus.SKIPPED,
        TaskStatus.CANCELLED,
    }
)


class BatchStatus(StrEnum):
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"  # cancelled while attempts still run; CANCELLED when they end
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


# The batch statuses a rerun may take back to RUNNING. Never CANCELLING: the rerun would undo
# the cancel while its last attempts finish (once it is CANCELLED: resume, or rerun).
RERUN_FROM = frozenset(
    {BatchStatus.RUNNING, BatchStatus.SUCCESS, BatchStatus.FAILED, BatchStatus.CANCELLED}
)


class TriggerRule(StrEnum):
    ALL_SUCCESS = "all_success"
    ALL_DONE = "all_done"
    ALL_FAILED = "all_failed"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    NONE_FAILED = "none_failed"


class FileStatus(StrEnum):
    RECEIVED = "RECEIVED"
    VALIDATED = "VALIDATED"
    LOADED = "LOADED"
    ARCHIVED = "ARCHIVED"
    REJECTED = "REJECTED"
    DUPLICATE = "DUPLICATE"


class Action(StrEnum):
    """Every kind of message, named once: the ``action`` of a JSON message (each has its
    ``schema/messages/<action>.schema.json``), and the GCS notification (known by attributes)."""

    START_BATCH = "start_batch"
    RUN_TASK = "run_task"
    POLL_TASK = "poll_task"
    SWEEP = "sweep"
    RERUN = "rerun"
    CANCEL_BATCH = "cancel_batch"
    RESUME = "resume"
    SIGNAL = "signal"  # an external event a signal sensor waits for
    OBJECT_FINALIZE = "object_finalize"
