"""Loading versions for the engine and the CLI, and moving a batch to its pipeline's current
version before a rerun (``rerun --latest``; the rule is in ``dagrelay.engine.versions``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection

from dagrelay.engine import versions
from dagrelay.errors import BadMessage
from dagrelay.states import Action
from dagrelay.store import versions as store

log = logging.getLogger(__name__)


def load_definition(conn: Connection, version_id: int) -> versions.Definition:
    head = store.header(conn, version_id=version_id)
    if head is None:
        raise LookupError(f"no pipeline version with version_id {version_id}")
    tasks, edges = store.definition_rows(conn, version_id)
    return versions.definition(head["pipeline"], head["version"], tasks, edges)


def move_to_latest(
    conn: Connection,
    *,
    pipeline: str,
    batch_id: str,
    tasks: Sequence[str],
    downstream: bool,
    now: datetime,
) -> int | None:
    """Move the batch (its row already locked by the caller) to the pipeline's current version
    if it is not on it; the version number it is on now, or None if the batch does not exist.
    BadMessage, naming the tasks, when the rule does not allow the move."""
    pinned = store.batch_version(conn, pipeline=pipeline, batch_id=batch_id)
    if pinned is None:
        return None
    latest = store.current_version(conn, pipeline=pipeline, now=now)
    if latest is None or latest == pinned.version_id:
        return pinned.version
    old, new = load_definition(conn, pinned.version_id), load_definition(conn, latest)
    ids = store.batch_task_ids(conn, pipeline=pipeline, batch_id=batch_id)
    refusals = versions.move_refusals(
        old,
        new,
        tasks=tasks,
        downstream=downstream,
        with_rows={t.name for t in old.tasks.values() if t.task_id in ids},
        started_from_task=pinned.start_task_id is not None,
    )
    if refusals:
        raise BadMessage(
            f"cannot move batch {pipeline}/{batch_id} from version {old.version} to "
            f"{new.version}: " + "; ".join(refusals)
        )
    dropped = store.move_batch(conn, pipeline=pipeline, batch_id=batch_id, version_id=latest)
    log.warning(
        "batch moved from version %d to %d (%d rows of removed tasks dropped)",
        old.version,
        new.version,
        dropped,
        extra={"action": Action.RERUN, "pipeline": pipeline, "batch_id": batch_id},
    )
    return new.version
