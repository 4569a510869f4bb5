"""Parsing and validation of the Pub/Sub messages the router receives.

A message is JSON in the message data, validated against ``schema/messages/<action>.schema.json``.
Everything wrong with a message becomes a ``BadMessage`` whose reason says what is wrong; the
router records it and acknowledges. GCS object notifications are recognised by their attributes.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from dagrelay.errors import BadMessage
from dagrelay.resources import schema_dir

ACTIONS = ("start_batch", "run_task", "poll_task", "sweep", "rerun", "cancel_batch")
MAX_DATA_BYTES = 1_000_000


@dataclass(frozen=True)
class Envelope:
    """A Pub/Sub message as delivered: base64 data, attributes and id."""

    data: str | None
    attributes: Mapping[str, str] = field(default_factory=dict)
    message_id: str | None = None


@dataclass(frozen=True)
class StartBatch:
    pipeline: str
    batch_id: str
    params: Mapping[str, Any] = field(default_factory=dict)
    start_task: str | None = None
    triggered_by: str | None = None


@dataclass(frozen=True)
class RunTask:
    batch_id: str
    task: str
    pipeline: str | None = None


@dataclass(frozen=True)
class PollTask:
    batch_id: str
    task: str
    attempt: int
    pipeline: str | None = None


@dataclass(frozen=True)
class Sweep:
    older_than_s: int | None = None


@dataclass(frozen=True)
class Rerun:
    batch_id: str
    task: str
    pipeline: str | None = None
    downstream: bool = False
    latest: bool = False  # first move the batch to the pipeline's current version


@dataclass(frozen=True)
class CancelBatch:
    pipeline: str
    batch_id: str


@dataclass(frozen=True)
class ObjectFinalized:
    """A GCS object-finalize notification (routed to ingestion)."""

    bucket: str
    name: str
    generation: int
    resource: Mapping[str, Any]


Message = StartBatch | RunTask | PollTask | Sweep | Rerun | CancelBatch | ObjectFinalized

_TYPES: dict[str, type[StartBatch | RunTask | PollTask | Sweep | Rerun | CancelBatch]] = {
    "start_batch": StartBatch,
    "run_task": RunTask,
    "poll_task": PollTask,
    "sweep": Sweep,
    "rerun": Rerun,
    "cancel_batch": CancelBatch,
}


@cache
def validator(action: str) -> Draft202012Validator:
    path = schema_dir() / "messages" / f"{action}.schema.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def envelope_from_push(body: Any) -> Envelope:
    """The envelope inside a Pub/Sub push body or Pub/Sub CloudEvent data
    (``{"message": {"data", "attributes", "messageId"}, "subscription"}``)."""
    message = body.get("message") if isinstance(body, Mapping) else None
    if not isinstance(message, Mapping):
        raise BadMessage("push body has no 'message' object")
    message_id = message.get("messageId") or message.get("message_id")
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise BadMessage("message attributes must map strings to strings", message_id=message_id)
    data = message.get("data")
    if data is not None and not isinstance(data, str):
        raise BadMessage("message data must be a base64 string", message_id=message_id)
    return Envelope(data=data, attributes=dict(attributes), message_id=message_id)


def parse(envelope: Envelope) -> Message:
    """The typed message in an envelope, or BadMessage naming what is wrong."""
    try:
        if envelope.attributes.get("eventType") == "OBJECT_FINALIZE":
            return _object_finalized(envelope)
        return _action_message(_json_object(envelope), envelope.attributes)
    except BadMessage as exc:
        raise BadMessage(exc.reason, message_id=envelope.message_id) from None


def _decode(envelope: Envelope) -> str:
    if not envelope.data:
        raise BadMessage("message has no data")
    if len(envelope.data) > MAX_DATA_BYTES * 4 // 3 + 4:
        raise BadMessage(f"message data is larger than {MAX_DATA_BYTES} bytes")
    try:
        raw = base64.b64decode(envelope.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadMessage(f"message data is not valid base64: {exc}") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadMessage(f"message data is not UTF-8: {exc}") from exc


def _json_object(envelope: Envelope) -> dict[str, Any]:
    text = _decode(envelope)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, too-long ints, deep nesting
        raise BadMessage(f"message data is not JSON we accept: {exc}") from exc
    if not isinstance(value, dict):
        raise BadMessage(f"message data must be a JSON object, got {type(value).__name__}")
    return value


def _action_message(body: dict[str, Any], attributes: Mapping[str, str]) -> Message:
    action = body.get("action")
    if not isinstance(action, str):
        raise BadMessage("message has no 'action' string")
    if action not in _TYPES:
        raise BadMessage(f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
    if attributes.get("action", action) != action:
        raise BadMessage(
            f"attribute action={attributes['action']!r} disagrees with data action={action!r}"
        )
    error = best_match(validator(action).iter_errors(body))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(message)"
        raise BadMessage(f"{action}: {where}: {error.message}")
    fields = {k: v for k, v in body.items() if k != "action"}
    return _TYPES[action](**fields)


def _object_finalized(envelope: Envelope) -> ObjectFinalized:
    attrs = envelope.attributes
    bucket, name = attrs.get("bucketId"), attrs.get("objectId")
    generation = attrs.get("objectGeneration", "")
    if not bucket or not name or not (generation.isascii() and generation.isdigit()):
        raise BadMessage("GCS notification lacks bucketId, objectId or a numeric objectGeneration")
    resource: dict[str, Any] = {}
    if attrs.get("payloadFormat") == "JSON_API_V1":
        resource = _json_object(envelope)
    return ObjectFinalized(bucket=bucket, name=name, generation=int(generation), resource=resource)
