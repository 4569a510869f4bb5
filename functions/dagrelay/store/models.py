"""SQLAlchemy models of the metadata schema. The migrations in migrations/ build the schema;
these models are only its description for Alembic (``target_metadata`` in migrations/env.py), and
tests/integration/test_migrations.py checks that the two agree. No runtime code uses them: the
engine's reads and writes are the named statements in schema/.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dagrelay.names import BATCH_ID_PATTERN, NAME_PATTERN
from dagrelay.states import BatchStatus, FileStatus, TaskStatus, TriggerRule


def _pg_enum(enum: type[StrEnum], name: str) -> Enum:
    return Enum(enum, name=name, create_type=False, values_callable=lambda e: [m.value for m in e])


TASK_STATUS = _pg_enum(TaskStatus, "task_status")
BATCH_STATUS = _pg_enum(BatchStatus, "batch_status")
TRIGGER_RULE = _pg_enum(TriggerRule, "trigger_rule")
FILE_STATUS = _pg_enum(FileStatus, "file_status")
TZ = DateTime(timezone=True)
# The same patterns as the migration's CHECKs and the message JSON Schemas.
PAYLOAD_VALID = "payload_bytes >= 0 AND payload_sha256 ~ '^[0-9a-f]{64}$' AND length(data) <= 65536"
NOW = text("now()")
EMPTY = text("'{}'::jsonb")


class Base(DeclarativeBase):
    pass


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("pipeline", "name", name="tasks_pipeline_name_key"),
        CheckConstraint(rf"name ~ '{NAME_PATTERN}'", name="tasks_name_format"),
        CheckConstraint(rf"pipeline ~ '{NAME_PATTERN}'", name="tasks_pipeline_format"),
        CheckConstraint("jsonb_typeof(params) = 'object'", name="tasks_params_object"),
        CheckConstraint(
            "max_retries >= 0 AND retry_delay_s >= 0 AND retry_backoff >= 1 "
            "AND retry_max_delay_s >= retry_delay_s",
            name="tasks_retries_valid",
        ),
        CheckConstraint("timeout_s > 0", name="tasks_timeout_positive"),
        Index("tasks_pipeline_idx", "pipeline"),
    )

    task_id: Mapped[int] = mapped_column(Integer, Identity(always=False), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    pipeline: Mapped[str] = mapped_column(Text)
    handler: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY)
    trigger_rule: Mapped[TriggerRule] = mapped_column(
        TRIGGER_RULE, server_default=TriggerRule.ALL_SUCCESS.value
    )
    max_retries: Mapped[int] = mapped_column(Integer, server_default="0")
    retry_delay_s: Mapped[int] = mapped_column(Integer, server_default="30")
    retry_backoff: Mapped[float] = mapped_column(Float, server_default="2.0")
    retry_max_delay_s: Mapped[int] = mapped_column(Integer, server_default="3600")
    timeout_s: Mapped[int] = mapped_column(Integer, server_default="540")
    pool: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(TZ, server_default=NOW)


class TaskDependency(Base):
    __tablename__ = "task_dependencies"
    __table_args__ = (
        CheckConstraint("child_task_id <> parent_task_id", name="task_dependencies_no_self_edge"),
        Index("task_dependencies_parent_idx", "parent_task_id"),
    )

    child_task_id: Mapped[int] = mapped_column(
        ForeignKey("tasks.task_id", ondelete="CASCADE"), primary_key=True
    )
    parent_task_id: Mapped[int] = mapped_column(
        ForeignKey("tasks.task_id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=NOW)


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (
        PrimaryKeyConstraint("pipeline", "batch_id"),
        CheckConstraint(rf"batch_id ~ '{BATCH_ID_PATTERN}'", name="batches_batch_id_format"),
        CheckConstraint("jsonb_typeof(params) = 'object'", name="batches_params_object"),
        Index("batches_created_idx", text("created_at DESC")),
        Index("batches_version_idx", "version_id"),
    )

    pipeline: Mapped[str] = mapped_column(Text)
    batch_id: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY)
    status: Mapped[BatchStatus] = mapped_column(
        BATCH_STATUS, server_default=BatchStatus.RUNNING.value
    )
    start_task_id: Mapped[int | None] = mapped_column(Integer)  # a task of the batch's version
    triggered_by: Mapped[str] = mapped_column(Text, server_default="unknown")
    trigger_message_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=NOW)
    finished_at: Mapped[datetime | None] = mapped_column(TZ)
    version_id: Mapped[int] = mapped_column(ForeignKey("pipeline_versions.version_id"))


class TaskLog(Base):
    __tablename__ = "task_log"
    __table_args__ = (
        UniqueConstraint("batch_id", "task_id", name="task_log_batch_task_key"),
        CheckConstraint("attempt >= 0", name="task_log_attempt_nonnegative"),
        CheckConstraint(
            "job IS NULL OR status = 'PROCESSING'", name="task_log_job_only_while_processing"
        ),
        Index("task_log_poll_idx", "poll_at", postgresql_where=text("job IS NOT NULL")),
        ForeignKeyConstraint(
            ["pipeline", "batch_id"],
            ["batches.pipeline", "batches.batch_id"],
            ondelete="CASCADE",
        ),
        Index(
            "task_log_open_idx",
            "batch_id",
            postgresql_where=text("status IN ('NEW', 'PROCESSING', 'RETRY')"),
        ),
        Index(
            "task_log_failed_idx",
            "batch_id",
            postgresql_where=text("status IN ('ERROR', 'UPSTREAM_FAILED')"),
        ),
    )

    log_id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    pipeline: Mapped[str] = mapped_column(Text)
    batch_id: Mapped[str] = mapped_column(Text)
    task_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[TaskStatus] = mapped_column(TASK_STATUS, server_default=TaskStatus.NEW.value)
    attempt: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=NOW)
    started_at: Mapped[datetime | None] = mapped_column(TZ)
    finished_at: Mapped[datetime | None] = mapped_column(TZ)
    lease_expires_at: Mapped[datetime | None] = mapped_column(TZ)
    next_attempt_at: Mapped[datetime | None] = mapped_column(TZ)
    error: Mapped[str | None] = mapped_column(Text)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    job: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    poll_at: Mapped[datetime | None] = mapped_column(TZ)
    root_cause_log_id: Mapped[int | None] = mapped_column(
        ForeignKey("task_log.log_id", ondelete="SET NULL")
    )


class TaskAttempt(Base):
    """One attempt of a task in a batch; kept when a rerun replaces the task_log row."""

    __tablename__ = "task_attempts"
    __table_args__ = (
        UniqueConstraint("log_id", "attempt", name="task_attempts_log_attempt_key"),
        Index("task_attempts_batch_task_idx", "batch_id", "task_id"),
    )

    attempt_id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    log_id: Mapped[int | None] = mapped_column(ForeignKey("task_log.log_id", ondelete="SET NULL"))
    batch_id: Mapped[str] = mapped_column(Text)
    task_id: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(TZ)
    finished_at: Mapped[datetime | None] = mapped_column(TZ)
    outcome: Mapped[TaskStatus | None] = mapped_column(TASK_STATUS)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)


class TaskFanin(Base):
    __tablename__ = "task_fanin"
    __table_args__ = (
        PrimaryKeyConstraint("batch_id", "task_id"),
        CheckConstraint(
            "parents > 0 AND succeeded >= 0 AND failed >= 0 AND skipped >= 0 "
            "AND succeeded + failed + skipped <= parents",
            name="task_fanin_counts_valid",
        ),
        ForeignKeyConstraint(
            ["pipeline", "batch_id"],
            ["batches.pipeline", "batches.batch_id"],
            ondelete="CASCADE",
        ),
    )

    pipeline: Mapped[str] = mapped_column(Text)
    batch_id: Mapped[str] = mapped_column(Text)
    task_id: Mapped[int] = mapped_column(Integer)
    parents: Mapped[int] = mapped_column(Integer)
    succeeded: Mapped[int] = mapped_column(Integer, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, server_default="0")
    skipped: Mapped[int] = mapped_column(Integer, server_default="0")
    root_cause_log_id: Mapped[int | None] = mapped_column(BigInteger)


class Outbox(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "outbox_unpublished_idx",
            "available_at",
            postgresql_where=text("published_at IS NULL"),
        ),
        Index(
            "outbox_log_idx",
            "log_id",
            text("created_at DESC"),
            postgresql_where=text("log_id IS NOT NULL"),
        ),
    )

    outbox_id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    topic: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=NOW)
    published_at: Mapped[datetime | None] = mapped_column(TZ)
    publish_attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    available_at: Mapped[datetime] = mapped_column(TZ, server_default=NOW)
    log_id: Mapped[int | None] = mapped_column(ForeignKey("task_log.log_id", ondelete="SET NULL"))


class RejectedMessage(Base):
    __tablename__ = "rejected_messages"
    __table_args__ = (
        UniqueConstraint("message_id", "payload_sha256", name="rejected_messages_message_key"),
        CheckConstraint(PAYLOAD_VALID, name="rejected_messages_payload_valid"),
    )

    rejected_id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    message_id: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(TZ, server_default=NOW)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY)
    data: Mapped[str | None] = mapped_column(Text)
    payload_bytes: Mapped[int] = mapped_column(BigInteger)
    payload_sha256: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)


class FileLog(Base):
    __tablename__ = "file_log"
    __table_args__ = (
        UniqueConstraint("bucket", "name", "generation", name="file_log_object_key"),
        Index("file_log_content_idx", "source", "md5"),
        Index("file_log_object_name_idx", "bucket", "name"),
    )

    file_id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    bucket: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(BigInteger)
    md5: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    source: Mapped[str | None] = mapped_column(Text)
    status: Mapped[FileStatus] = mapped_column(
        FILE_STATUS, server_default=FileStatus.RECEIVED.value
    )
    rows_loaded: Mapped[int | None] = mapped_column(BigInteger)
    target_table: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(TZ, server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(TZ, server_default=NOW)
    batch_id: Mapped[str | None] = mapped_column(Text)
    load_job: Mapped[str | None] = mapped_column(Text)
    duplicate_of: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("file_log.file_id", name="file_log_duplicate_of_fkey")
    )


class DeadLetter(Base):
    __tablename__ = "dead_letters"
    __table_args__ = (
        UniqueConstraint("message_id", "payload_sha256", name="dead_letters_message_key"),
        CheckConstraint(PAYLOAD_VALID, name="dead_letters_payload_valid"),
        Index("dead_letters_batch_idx", "batch_id"),
    )

    dead_letter_id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    message_id: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(TZ, server_default=NOW)
    source_subscription: Mapped[str | None] = mapped_column(Text)
    delivery_attempts: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str | None] = mapped_column(Text)
    pipeline: Mapped[str | None] = mapped_column(Text)
    batch_id: Mapped[str | None] = mapped_column(Text)
    task: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY)
    data: Mapped[str | None] = mapped_column(Text)
    payload_bytes: Mapped[int] = mapped_column(BigInteger)
    payload_sha256: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)


class PipelineVersion(Base):
    """An immutable snapshot of a pipeline's definition, stored once per content hash."""

    __tablename__ = "pipeline_versions"
    __table_args__ = (
        UniqueConstraint("pipeline", "version", name="pipeline_versions_number_key"),
        UniqueConstraint("pipeline", "content_hash", name="pipeline_versions_content_key"),
        CheckConstraint("version > 0", name="pipeline_versions_number_positive"),
    )

    version_id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    pipeline: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=NOW)


class VersionTask(Base):
    __tablename__ = "version_tasks"
    __table_args__ = (UniqueConstraint("version_id", "name", name="version_tasks_name_key"),)

    version_id: Mapped[int] = mapped_column(
        ForeignKey("pipeline_versions.version_id", ondelete="CASCADE"), primary_key=True
    )
    task_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    handler: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    trigger_rule: Mapped[TriggerRule] = mapped_column(TRIGGER_RULE)
    max_retries: Mapped[int] = mapped_column(Integer)
    retry_delay_s: Mapped[int] = mapped_column(Integer)
    retry_backoff: Mapped[float] = mapped_column(Float)
    retry_max_delay_s: Mapped[int] = mapped_column(Integer)
    timeout_s: Mapped[int] = mapped_column(Integer)
    pool: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean)


class VersionEdge(Base):
    __tablename__ = "version_edges"
    __table_args__ = (
        ForeignKeyConstraint(
            ["version_id", "child_task_id"],
            ["version_tasks.version_id", "version_tasks.task_id"],
            ondelete="CASCADE",
        ),
        ForeignKeyConstraint(
            ["version_id", "parent_task_id"],
            ["version_tasks.version_id", "version_tasks.task_id"],
            ondelete="CASCADE",
        ),
        Index("version_edges_parent_idx", "version_id", "parent_task_id"),
    )

    version_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    child_task_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_task_id: Mapped[int] = mapped_column(Integer, primary_key=True)


class Schedule(Base):
    """A pipeline's recurring schedule (dagrelay.engine.schedules evaluates it)."""

    __tablename__ = "schedules"
    __table_args__ = (
        CheckConstraint(rf"pipeline ~ '{NAME_PATTERN}'", name="schedules_pipeline_format"),
        CheckConstraint(
            r"cron ~ '^@(yearly|annually|monthly|weekly|daily|midnight|hourly)$' "
            r"OR cron ~ '^\s*\S+\s+\S+\s+\S+\s+\S+\s+\S+\s*$'",
            name="schedules_cron_five_fields",
        ),
        CheckConstraint("dagrelay_is_timezone(timezone)", name="schedules_timezone_known"),
        CheckConstraint(
            "length(batch_id_template) BETWEEN 1 AND 200", name="schedules_template_length"
        ),
        CheckConstraint("catchup IN ('all', 'latest')", name="schedules_catchup_valid"),
        CheckConstraint("catchup_limit BETWEEN 1 AND 1000", name="schedules_catchup_limit_range"),
        CheckConstraint("max_active_batches >= 1", name="schedules_max_active_positive"),
        CheckConstraint("overlap IN ('skip', 'wait')", name="schedules_overlap_valid"),
        Index("schedules_due_idx", "next_run_at", postgresql_where=text("NOT paused")),
    )

    pipeline: Mapped[str] = mapped_column(Text, primary_key=True)
    cron: Mapped[str] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(Text, server_default="Etc/UTC")
    batch_id_template: Mapped[str] = mapped_column(
        Text, server_default="{scheduled_for:%Y-%m-%dT%H:%M}"
    )
    catchup: Mapped[str] = mapped_column(Text, server_default="latest")
    catchup_limit: Mapped[int] = mapped_column(Integer, server_default="10")
    max_active_batches: Mapped[int] = mapped_column(Integer, server_default="1")
    overlap: Mapped[str] = mapped_column(Text, server_default="skip")
    paused: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    next_run_at: Mapped[datetime | None] = mapped_column(TZ)
    last_tick_at: Mapped[datetime | None] = mapped_column(TZ)
    last_run_at: Mapped[datetime | None] = mapped_column(TZ)
    last_batch_id: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(TZ, server_default=NOW)
