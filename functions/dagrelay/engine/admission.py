"""Will the router take this operator message? ``check_outgoing`` answers before it is
published, for the CLI and the dashboard: first the router's own parse of the message as it
will travel (``messages.check_outgoing``: size, encoding, depth, JSON Schema), then the
database's consistency as the engine will find it (the pipeline, the start task, the batch and
its status), with the engine's own rules and words (the functions below, which ``core`` raises
with). A problem the router would only ignore, not reject (a batch that already exists, a
cancel of a finished batch), is the caller's to refuse."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from dagrelay import messages
from dagrelay.states import RERUN_FROM, Action, BatchStatus, TaskStatus
from dagrelay.store import reads

if TYPE_CHECKING:
    from dagrelay.store.direct import Reader


class Kind(StrEnum):
    INVALID = "invalid"  # the message itself (HTTP 400)
    MISSING = "missing"  # names what does not exist (404)
    CONFLICT = "conflict"  # the batch's state does not allow it now (409)


@dataclass(frozen=True)
class Problem:
    reason: str
    kind: Kind = Kind.INVALID

    def __str__(self) -> str:
        return self.reason


def check_outgoing(conn: Reader | None, message: Mapping[str, Any]) -> list[Problem]:
    """Why the router would reject ``message``, [] if it will accept it (as things stand in
    the database now; ``conn`` None checks the message alone)."""
    if problems := messages.check_outgoing(message):
        return [Problem(reason) for reason in problems]
    if conn is None:
        return []
    action, pipeline = message["action"], message.get("pipeline")
    if action == Action.START_BATCH:
        return _start(conn, message["pipeline"], message.get("start_task"))
    if action == Action.RERUN and pipeline is not None:
        return _rerun(conn, pipeline, message["batch_id"], message["task"])
    if action == Action.RESUME:
        return _resume(conn, message["pipeline"], message["batch_id"])
    return []


def _start(conn: Reader, pipeline: str, start_task: str | None) -> list[Problem]:
    tasks = [t["name"] for t in reads.pipeline_tasks(conn, pipeline)]
    if refusal := start_refusal(pipeline, start_task, tasks):
        return [Problem(refusal, Kind.MISSING)]
    return []


def _resume(conn: Reader, pipeline: str, batch_id: str) -> list[Problem]:
    status = reads.batch_statuses(conn, pipeline, [batch_id]).get(batch_id)
    if refusal := resume_refusal(pipeline, batch_id, status):
        return [Problem(refusal, Kind.MISSING if status is None else Kind.CONFLICT)]
    return []


def _rerun(conn: Reader, pipeline: str, batch_id: str, task: str) -> list[Problem]:
    status = reads.batch_statuses(conn, pipeline, [batch_id]).get(batch_id)
    rows = reads.batch_rows(conn, pipeline, batch_id) if status is not None else {}
    if status is not None and status not in RERUN_FROM:
        return [Problem(not_rerunnable(pipeline, batch_id, status), Kind.CONFLICT)]
    if task not in rows:
        reason = f"no batch {batch_id!r} with a task {task!r} in pipeline {pipeline!r}"
        return [Problem(reason, Kind.MISSING)]
    if rows[task] is None:
        return [Problem(f"task {task!r} has not been started in batch {batch_id!r}", Kind.CONFLICT)]
    running = sorted(name for name, s in rows.items() if s == TaskStatus.PROCESSING)
    if running:
        return [Problem(rerun_while_running(running), Kind.CONFLICT)]
    return []


def start_refusal(pipeline: str, start_task: str | None, tasks: list[str]) -> str | None:
    """Why a start_batch of ``pipeline`` (whose live tasks are ``tasks``) is refused."""
    if not tasks:
        return f"unknown pipeline {pipeline!r} (it has no tasks)"
    if start_task is not None and start_task not in tasks:
        return f"start_task {start_task!r} is not a task of pipeline {pipeline!r}"
    return None


def resume_refusal(pipeline: str, batch_id: str, status: str | None) -> str | None:
    """Only a CANCELLED batch resumes; a CANCELLING one once its running attempts ended."""
    if status is None:
        return f"no batch {batch_id!r} in pipeline {pipeline!r}"
    if status == BatchStatus.CANCELLING:
        return (
            f"batch {pipeline}/{batch_id} is CANCELLING: its running tasks have not "
            "finished yet; resume it once it is CANCELLED"
        )
    if status != BatchStatus.CANCELLED:
        return (
            f"batch {pipeline}/{batch_id} is {status}, not CANCELLED: nothing to resume "
            "(rerun runs tasks of a finished batch again)"
        )
    return None


def not_rerunnable(pipeline: str, batch_id: str, status: str | None) -> str:
    """Why a rerun is refused: the batch's status (None: it changed under the rerun)."""
    if status is None:
        return f"batch {pipeline}/{batch_id} changed status during the rerun; try again"
    return (
        f"batch {pipeline}/{batch_id} is {status}: a rerun now would undo the cancel; wait "
        "until it is CANCELLED, then resume it or rerun"
    )


def rerun_while_running(running: list[str]) -> str:
    return (
        f"cannot rerun while {', '.join(running)} {'is' if len(running) == 1 else 'are'} "
        "running; wait for it or cancel the batch"
    )
