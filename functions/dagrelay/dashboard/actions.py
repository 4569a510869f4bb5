"""The operator's actions: each turns a submitted form into the messages the CLI would publish
(built by ``dagrelay.messages.outgoing``), refused unless the router will take it: every
message passes ``dagrelay.engine.admission.check_outgoing`` (the router's parse and the engine's
consistency checks, as the CLI uses them), and what the router would only ignore (a batch that
exists, a cancel of a finished batch) is refused here. ``triggered_by`` records who asked."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection

from dagrelay.engine.admission import Kind, check_outgoing
from dagrelay.errors import BadMessage
from dagrelay.messages import Action, loads, outgoing
from dagrelay.states import RERUN_FROM, BatchStatus, TaskStatus
from dagrelay.store import reads

Form = Mapping[str, str]
Message = dict[str, Any]


class Refused(Exception):
    """The form asks for something that cannot be done; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _field(form: Form, name: str, required: bool = True) -> str | None:
    value = (form.get(name) or "").strip()
    if not value and required:
        raise Refused(f"the form lacks {name!r}")
    return value or None


def _params(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = loads(raw, "params")
    except BadMessage as exc:
        raise Refused(exc.reason) from None
    if not isinstance(value, dict):
        raise Refused('params must be a JSON object, e.g. {"month": "2024-03"}')
    return value


STATUS = {Kind.INVALID: 400, Kind.MISSING: 404, Kind.CONFLICT: 409}


def _build(action: Action, **fields: Any) -> Message:
    try:
        return outgoing(action, **fields)
    except BadMessage as exc:
        raise Refused(exc.reason) from None


def admitted(conn: Connection, message: Message) -> Message:
    """``message`` if the router will take it, else Refused with every problem."""
    if problems := check_outgoing(conn, message):
        raise Refused("; ".join(map(str, problems)), STATUS[problems[0].kind])
    return message


def _batch(conn: Connection, pipeline: str, batch_id: str) -> dict[str, str | None]:
    rows = reads.batch_rows(conn, pipeline, batch_id)
    if not rows and not reads.batch_statuses(conn, pipeline, [batch_id]):
        raise Refused(f"no batch {batch_id!r} in pipeline {pipeline!r}", 404)
    return rows


def _rerunnable(conn: Connection, pipeline: str, batch_id: str) -> None:
    """A rerun never undoes a cancel: refused while the batch is CANCELLING."""
    status = reads.batch_statuses(conn, pipeline, [batch_id]).get(batch_id)
    if status is not None and status not in RERUN_FROM:
        raise Refused(
            f"batch {pipeline}/{batch_id} is {status}: a rerun now would undo the cancel; "
            "wait until it is CANCELLED",
            409,
        )


def trigger(conn: Connection, form: Form, who: str) -> list[Message]:
    pipeline, batch_id = _field(form, "pipeline"), _field(form, "batch_id")
    start_task = _field(form, "start_task", required=False)
    message = _build(
        Action.START_BATCH,
        pipeline=pipeline,
        batch_id=batch_id,
        params=_params(_field(form, "params", required=False)),
        start_task=start_task,
        triggered_by=who,
    )
    admitted(conn, message)
    existing = reads.batch_statuses(conn, message["pipeline"], [message["batch_id"]])
    if existing:
        status = existing[message["batch_id"]]
        raise Refused(f"batch {pipeline}/{batch_id} already exists ({status})", 409)
    return [message]


def rerun(conn: Connection, form: Form, who: str) -> list[Message]:
    pipeline, batch_id, task = (_field(form, k) for k in ("pipeline", "batch_id", "task"))
    downstream = form.get("downstream") in ("1", "true", "on")
    message = _build(
        Action.RERUN,
        pipeline=pipeline,
        batch_id=batch_id,
        task=task,
        downstream=downstream,
        triggered_by=who,
    )
    rows = _batch(conn, message["pipeline"], message["batch_id"])
    _rerunnable(conn, message["pipeline"], message["batch_id"])
    if task not in rows:
        raise Refused(f"pipeline {pipeline!r} has no task {task!r}", 404)
    if rows[message["task"]] is None:
        raise Refused(f"task {task!r} has not started in batch {batch_id!r}: nothing to rerun", 409)
    return [admitted(conn, message)]


def rerun_failed(conn: Connection, form: Form, who: str) -> list[Message]:
    """One rerun, with its downstream, of each task that failed (ERROR) in the batch."""
    pipeline, batch_id = _field(form, "pipeline"), _field(form, "batch_id")
    rows = _batch(conn, str(pipeline), str(batch_id))
    _rerunnable(conn, str(pipeline), str(batch_id))
    failed = sorted(task for task, status in rows.items() if status == TaskStatus.ERROR)
    if not failed:
        raise Refused(f"no task failed in batch {pipeline}/{batch_id}: nothing to rerun", 409)
    return [
        admitted(
            conn,
            _build(
                Action.RERUN,
                pipeline=pipeline,
                batch_id=batch_id,
                task=task,
                downstream=True,
                triggered_by=who,
            ),
        )
        for task in failed
    ]


def cancel(conn: Connection, form: Form, who: str) -> list[Message]:
    pipeline, batch_id = _field(form, "pipeline"), _field(form, "batch_id")
    message = _build(Action.CANCEL_BATCH, pipeline=pipeline, batch_id=batch_id, triggered_by=who)
    statuses = reads.batch_statuses(conn, message["pipeline"], [message["batch_id"]])
    if not statuses:
        raise Refused(f"no batch {batch_id!r} in pipeline {pipeline!r}", 404)
    if statuses[message["batch_id"]] != BatchStatus.RUNNING:
        status = statuses[message["batch_id"]]
        raise Refused(f"batch {pipeline}/{batch_id} is {status}: nothing to cancel", 409)
    return [admitted(conn, message)]


def resume(conn: Connection, form: Form, who: str) -> list[Message]:
    pipeline, batch_id = _field(form, "pipeline"), _field(form, "batch_id")
    message = _build(Action.RESUME, pipeline=pipeline, batch_id=batch_id, triggered_by=who)
    statuses = reads.batch_statuses(conn, message["pipeline"], [message["batch_id"]])
    if not statuses:
        raise Refused(f"no batch {batch_id!r} in pipeline {pipeline!r}", 404)
    if statuses[message["batch_id"]] != BatchStatus.CANCELLED:
        status = statuses[message["batch_id"]]
        raise Refused(
            f"batch {pipeline}/{batch_id} is {status}: only a CANCELLED batch resumes", 409
        )
    return [admitted(conn, message)]


ACTIONS: dict[str, Callable[[Connection, Form, str], list[Message]]] = {
    "trigger": trigger,
    "rerun": rerun,
    "rerun-failed": rerun_failed,
    "cancel": cancel,
    "resume": resume,
}
