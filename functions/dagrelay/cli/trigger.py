"""``dagrelay trigger``: build a start_batch message and publish it."""

from __future__ import annotations

import getpass
import json
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from google.api_core.exceptions import GoogleAPIError
from google.cloud import pubsub_v1

from dagrelay import messages
from dagrelay.cli.app import app, reports_errors
from dagrelay.config import get_settings
from dagrelay.errors import DagrelayError

PUBLISH_TIMEOUT_S = 60.0


@app.command()
@reports_errors
def trigger(
    pipeline: Annotated[str, typer.Argument(help="The pipeline to run.")],
    batch_id: Annotated[str, typer.Argument(help="Identifies the run, e.g. 2024-03.")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Batch parameter k=v (v is JSON if it parses)."),
    ] = None,
    start_task: Annotated[
        str | None, typer.Option(help="Run only this task and its downstream.")
    ] = None,
) -> None:
    """Publish a start_batch message to the events topic."""
    message = start_batch_message(pipeline, batch_id, parse_params(param or []), start_task)
    settings = get_settings()
    message_id = publish(settings.project_id, settings.events_topic, message)
    typer.echo(f"published start_batch {pipeline}/{batch_id} (message id {message_id})")


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["n=3", "month=2024-03"]`` -> ``{"n": 3, "month": "2024-03"}``."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not k=v", param_hint="--param")
        params[key] = _json_or_text(raw)
    return params


def _json_or_text(raw: str) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(name)  # NaN and Infinity are not JSON

    try:
        return json.loads(raw, parse_constant=no_constants)
    except ValueError:
        return raw


def start_batch_message(
    pipeline: str, batch_id: str, params: Mapping[str, Any], start_task: str | None
) -> dict[str, Any]:
    """The start_batch message, checked against its JSON Schema (BadMessage if invalid)."""
    return messages.outgoing(
        messages.Action.START_BATCH,
        pipeline=pipeline,
        batch_id=batch_id,
        params=dict(params),
        start_task=start_task,
        triggered_by=f"cli:{current_user()}",
    )


def current_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return "unknown"


def publish(project_id: str, topic_id: str, message: Mapping[str, Any]) -> str:
    """Publish and wait until Pub/Sub accepted it; returns the message id."""
    client = pubsub_v1.PublisherClient()
    topic = client.topic_path(project_id, topic_id)
    try:
        future = client.publish(topic, json.dumps(message).encode(), action=message["action"])
        return str(future.result(timeout=PUBLISH_TIMEOUT_S))
    except (GoogleAPIError, TimeoutError) as exc:
        raise DagrelayError(f"publishing to {topic} failed: {exc}") from exc
    finally:
        client.stop()


# -- status --------------------------------------------------------------------------------------
