"""``dagrelay trigger``: check what can be checked, publish a start_batch message, and with
--wait follow the batch to its end (or report the router's rejection of the message)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dagrelay.cli.app import app, current_user, fail, reports_errors
from dagrelay.cli.follow import DEFAULT_POLL_S, DEFAULT_TIMEOUT_S, Poll, Timeout, follow
from dagrelay.errors import DagrelayError

if TYPE_CHECKING:
    from dagrelay.store import reads
    from dagrelay.store.direct import Reader

JSON_STARTS = ("{", "[", '"')
PARAM_HELP = (
    "Batch parameter k=v. v is JSON when it parses as JSON (3, true, null, [1, 2], "
    '{"a": 1}), else text (2024-03); a v that starts with {, [ or " must be valid JSON.'
)


class IfExists(StrEnum):
    FAIL = "fail"  # say so and exit 1
    IGNORE = "ignore"  # say so and exit 0 (with --wait, follow the existing batch)


@app.command()
@reports_errors
def trigger(
    pipeline: Annotated[str, typer.Argument(help="The pipeline to run.")],
    batch_id: Annotated[str, typer.Argument(help="Identifies the run, e.g. 2024-03.")],
    *,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help=PARAM_HELP)] = None,
    start_task: Annotated[
        str | None, typer.Option(help="Run only this task and its downstream.")
    ] = None,
    if_exists: Annotated[
        IfExists,
        typer.Option(
            help="When the batch exists already: nothing is published either way (its params "
            "stay as they are); 'fail' exits 1, 'ignore' exits 0."
        ),
    ] = IfExists.FAIL,
    check: Annotated[
        bool,
        typer.Option(
            help="Check in the database, before publishing, that the pipeline and start task "
            "exist and the batch does not (--no-check: publish without a database)."
        ),
    ] = True,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Follow the batch to its end: exit 0 if it succeeded, 1 if not; 2 if the "
            "router rejected the message (its reason is printed).",
        ),
    ] = False,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    poll: Poll = DEFAULT_POLL_S,
) -> None:
    """Publish a start_batch message to the events topic, after checking what can be checked:
    the pipeline and start task exist, the params parse, the batch does not exist yet.

    Exit codes: 0 published (with --wait: the batch succeeded); 1 the batch exists already, or
    (with --wait) it did not succeed or the timeout passed; 2 bad input, an unknown pipeline or
    task, or (with --wait) the router rejected the message."""
    message = start_batch_message(pipeline, batch_id, parse_params(param or []), start_task)
    deadline = time.monotonic() + timeout
    if not check:
        admit(None, message)  # the message alone, as the router will parse it
    else:
        from dagrelay.store.direct import reading

        with reading() as conn:
            existing = check_trigger(conn, pipeline, batch_id, start_task)
            admit(conn, message)
        if existing is not None:
            _exists(pipeline, batch_id, existing, if_exists, message["params"])
            if wait:
                follow(batch_id, pipeline, deadline, poll)
            return
    from dagrelay.config import get_settings

    settings = get_settings()
    request_id = uuid.uuid4().hex
    message_id = publish(settings.project_id, settings.events_topic, message, request_id)
    typer.echo(f"published start_batch {pipeline}/{batch_id} (message id {message_id})")
    if wait:
        follow(batch_id, pipeline, deadline, poll, RejectionCheck(message, message_id, request_id))


def check_trigger(
    conn: Reader, pipeline: str, batch_id: str, start_task: str | None
) -> dict[str, Any] | None:
    """The batch's head if it exists; DagrelayError naming an unknown pipeline or start task."""
    from dagrelay import names
    from dagrelay.store import reads

    tasks = [t["name"] for t in reads.pipeline_tasks(conn, pipeline)]
    if not tasks:
        known = reads.pipeline_names(conn)
        hint = names.did_you_mean(pipeline, known)
        listed = f"; known pipelines: {', '.join(known)}" if known and not hint else ""
        raise DagrelayError(f"unknown pipeline {pipeline!r} (it has no tasks){hint}{listed}")
    if start_task is not None and start_task not in tasks:
        hint = names.did_you_mean(start_task, tasks) or f"; its tasks: {', '.join(tasks)}"
        raise DagrelayError(f"start task {start_task!r} is not a task of {pipeline!r}{hint}")
    return reads.batch_head(conn, pipeline, batch_id)


def admit(conn: Reader | None, message: Mapping[str, Any]) -> None:
    """Exit 2 with the router's reasons if it would reject ``message`` (the one check the
    dashboard makes too: ``engine.admission.check_outgoing``)."""
    from dagrelay.engine.admission import check_outgoing

    if problems := check_outgoing(conn, message):
        fail([f"the router would reject this message: {p}" for p in problems], 2)


def _exists(
    pipeline: str,
    batch_id: str,
    head: Mapping[str, Any],
    if_exists: IfExists,
    params: Mapping[str, Any],
) -> None:
    when = head["finished_at"] or head["created_at"]
    said = (
        f"batch {pipeline}/{batch_id} already exists: {head['status']} since "
        f"{when:%Y-%m-%d %H:%M:%S %Z}; nothing published"
    )
    if params and dict(params) != head["params"]:
        said += f", the --param values were NOT applied (it keeps {json.dumps(head['params'])})"
    said += "; `dagrelay rerun` runs its tasks again"
    if if_exists == IfExists.FAIL:
        fail([said + " (--if-exists=ignore makes this exit 0)"], 1)
    typer.echo(said)


class RejectionCheck:
    """While following a batch it started: the router's rejection of its start_batch message
    ends the wait (exit 2, with the reason); a batch some other message started is said once."""

    def __init__(self, message: Mapping[str, Any], message_id: str, request_id: str) -> None:
        self.what = f"start_batch {message['pipeline']}/{message['batch_id']}"
        self.message_id = message_id
        self.request_id = request_id
        self.started = False

    def __call__(self, conn: Reader, report: list[reads.Batch]) -> None:
        from dagrelay.store import reads

        if report and not self.started:
            self.started = True
            head = reads.batch_head(conn, report[0]["pipeline"], report[0]["batch_id"])
            if head is not None and head["trigger_message_id"] != self.message_id:
                typer.echo(
                    f"note: the batch was started by another message "
                    f"({head['triggered_by']}); this one's params were not applied",
                    err=True,
                )
        if not report:
            rejected = reads.rejection_of(conn, self.message_id, self.request_id)
            if rejected is not None:
                fail([f"the router rejected {self.what}: {rejected['reason']}"], 2)


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["n=3", "month=2024-03"]`` -> ``{"n": 3, "month": "2024-03"}``; a value that starts
    like JSON (``{``, ``[``, ``"``) and is not valid JSON is an error naming the parameter."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not k=v", param_hint="--param")
        params[key] = _json_or_text(key, raw)
    return params


def _json_or_text(key: str, raw: str) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")  # NaN and Infinity

    try:
        return json.loads(raw, parse_constant=no_constants)
    except ValueError as exc:
        if raw.lstrip().startswith(JSON_STARTS):
            raise typer.BadParameter(
                f"{key}: {raw!r} starts like JSON but is not valid JSON ({exc})",
                param_hint="--param",
            ) from exc
        return raw


def start_batch_message(
    pipeline: str, batch_id: str, params: Mapping[str, Any], start_task: str | None
) -> dict[str, Any]:
    """The start_batch message, checked against its JSON Schema (BadMessage if invalid)."""
    from dagrelay import messages

    return messages.outgoing(
        messages.Action.START_BATCH,
        pipeline=pipeline,
        batch_id=batch_id,
        params=dict(params),
        start_task=start_task,
        triggered_by=f"cli:{current_user()}",
    )


def publish(
    project_id: str, topic_id: str, message: Mapping[str, Any], request_id: str | None = None
) -> str:
    """Publish and wait until Pub/Sub accepted it; returns the message id. ``request_id`` (an
    attribute, kept with a rejection) lets the command find the router's rejection of it."""
    from dagrelay.cli import publish as pubsub_rest
    from dagrelay.messages import encode

    attributes = {"action": message["action"]}
    if request_id is not None:
        attributes["request_id"] = request_id
    return pubsub_rest.publish(project_id, topic_id, encode(message), attributes)
