"""``dagrelay signal KEY``: publish a signal message; the signal sensors waiting for KEY end
SUCCESS with its payload (ARCHITECTURE.md, "Sensors")."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

import typer

from dagrelay.cli.app import current_user, reports_errors
from dagrelay.errors import DagrelayError
from dagrelay.states import Action


@reports_errors
def signal(
    key: Annotated[str, typer.Argument(help="What happened, e.g. crm.export.2024-03.")],
    *,
    payload: Annotated[
        str | None, typer.Option(help="A JSON object the sensor passes on as its output.")
    ] = None,
    signal_id: Annotated[
        str | None,
        typer.Option(help="An id of your own: a signal published twice with it counts once."),
    ] = None,
) -> None:
    """Publish a signal message to the events topic. A sensor counts a signal received at or
    after its batch started (or, with since: task, after the task became due).

    Exit codes: 0 published; 2 bad input (the router would reject the message)."""
    from dagrelay import messages
    from dagrelay.cli.trigger import admit, publish
    from dagrelay.config import get_settings

    message = messages.outgoing(
        Action.SIGNAL,
        key=key,
        payload=_payload(payload),
        signal_id=signal_id or uuid.uuid4().hex,
        triggered_by=f"cli:{current_user()}",
    )
    admit(None, message)
    settings = get_settings()
    message_id = publish(settings.project_id, settings.events_topic, message, uuid.uuid4().hex)
    typer.echo(f"published signal {key} (message id {message_id})")


def _payload(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise DagrelayError(f"--payload is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise DagrelayError(f"--payload must be a JSON object, not {type(value).__name__}")
    return value
