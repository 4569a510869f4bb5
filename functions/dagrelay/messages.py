"""Parsing and validation of the Pub/Sub messages the router receives.

A message is JSON in the message data, validated against ``schema/messages/<action>.schema.json``.
Everything wrong with a message becomes a ``BadMessage`` whose reason says what is wrong; the
router records it and acknowledges. GCS object notifications are recognised by their attributes.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, get_args

from jsonschema.protocols import Validator

from dagrelay import schemas
from dagrelay.errors import BadMessage
from dagrelay.states import Action as Action  # noqa: PLC0414 (a re-export)

MAX_DATA_BYTES = 1_000_000
MAX_DEPTH = 500  # nesting of JSON arrays and objects in a message (checked before parsing)
MAX_SIGNAL_PAYLOAD_BYTES = 16 * 1024  # a signal's payload becomes its sensor's output


@dataclass(frozen=True)
class Envelope:
    """A Pub/Sub message as delivered: base64 data, attributes and id."""

    data: str | None
    attributes: Mapping[str, str] = field(default_factory=dict)
    message_id: str | None = None


@dataclass(frozen=True)
class StartBatch:
    action: ClassVar[Action] = Action.START_BATCH

    pipeline: str
    batch_id: str
    params: Mapping[str, Any] = field(default_factory=dict)
    start_task: str | None = None
    triggered_by: str | None = None


@dataclass(frozen=True)
class RunTask:
    action: ClassVar[Action] = Action.RUN_TASK

    batch_id: str
    task: str
    pipeline: str | None = None
    map_index: int | None = None  # an instance of a mapped task


@dataclass(frozen=True)
class PollTask:
    action: ClassVar[Action] = Action.POLL_TASK

    batch_id: str
    task: str
    attempt: int
    pipeline: str | None = None
    # The poll this message is for (the attempt's poll_at when it was written): a copy that
    # arrives after the attempt deferred again is stale and ignored. None: any poll (the sweeper).
    poll_at: str | None = None


@dataclass(frozen=True)
class Sweep:
    action: ClassVar[Action] = Action.SWEEP

    older_than_s: int | None = None


@dataclass(frozen=True)
class Rerun:
    action: ClassVar[Action] = Action.RERUN

    batch_id: str
    task: str
    pipeline: str | None = None
    downstream: bool = False
    latest: bool = False  # first move the batch to the pipeline's current version
    triggered_by: str | None = None  # who asked (logged)
    failed_items: bool = False  # a mapped task: only its failed instances


@dataclass(frozen=True)
class CancelBatch:
    action: ClassVar[Action] = Action.CANCEL_BATCH

    pipeline: str
    batch_id: str
    triggered_by: str | None = None  # who asked (logged)


@dataclass(frozen=True)
class Resume:
    action: ClassVar[Action] = Action.RESUME

    pipeline: str
    batch_id: str
    triggered_by: str | None = None  # who asked (logged)


@dataclass(frozen=True)
class Signal:
    """An external event (another system finished, a person said go): recorded once, it ends
    the signal sensors waiting for its key (ARCHITECTURE.md, "Sensors")."""

    action: ClassVar[Action] = Action.SIGNAL

    key: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    signal_id: str | None = None  # the sender's id: a repeated publish is recorded once
    triggered_by: str | None = None


@dataclass(frozen=True)
class ObjectFinalized:
    """A GCS object-finalize notification (routed to ingestion)."""

    action: ClassVar[Action] = Action.OBJECT_FINALIZE

    bucket: str
    name: str
    generation: int
    resource: Mapping[str, Any]


ActionMessage = StartBatch | RunTask | PollTask | Sweep | Rerun | CancelBatch | Resume | Signal
Message = ActionMessage | ObjectFinalized

_TYPES: dict[str, type[ActionMessage]] = {t.action.value: t for t in get_args(ActionMessage)}
ACTIONS = tuple(_TYPES)  # the actions a JSON message may name


def validator(action: str) -> Validator:
    return schemas.validator(f"messages/{action}.schema.json")


def outgoing(action: Action, **fields: Any) -> dict[str, Any]:
    """A message to publish: ``action`` and the fields that are not None, checked against the
    action's JSON Schema (BadMessage naming what is wrong). The CLI and the dashboard build
    every message they publish with it."""
    message = {"action": action.value, **{k: v for k, v in fields.items() if v is not None}}
    if problem := schemas.problem(validator(action.value), message, "(message)"):
        raise BadMessage(f"{action.value}: {problem}")
    return message


def encode(message: Mapping[str, Any]) -> bytes:
    """The bytes a message travels as (the outbox, the CLI and the dashboard publish these)."""
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode()


def check_outgoing(message: Mapping[str, Any]) -> list[str]:
    """What the router's own parse (``parse``: size, encoding, depth, JSON Schema) finds wrong
    with ``message`` encoded as it will be published; [] if the router will take it. The
    database's side is ``dagrelay.engine.admission.check_outgoing``, which starts here."""
    data = base64.b64encode(encode(message)).decode()
    try:
        parse(Envelope(data, {"action": str(message.get("action"))}))
    except BadMessage as exc:
        return [exc.reason]
    return []


def too_deep(text: str) -> int | None:
    """How deep arrays and objects nest in JSON ``text`` when that is deeper than MAX_DEPTH,
    else None; counted without parsing (a text nested 100,000 deep costs one pass, not a
    RecursionError)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return None  # cannot nest deeper than the limit
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest if deepest > MAX_DEPTH else None


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def loads(text: str, what: str = "message data") -> Any:
    """JSON ``text`` as the router accepts it: nested at most MAX_DEPTH deep, finite numbers
    only (no 1e999, NaN or Infinity); BadMessage naming what is wrong."""
    if (depth := too_deep(text)) is not None:
        raise BadMessage(f"{what} is nested {depth} deep; the limit is {MAX_DEPTH}")
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, too-long ints
        raise BadMessage(f"{what} is not JSON we accept: {exc}") from exc


def escaped(text: str) -> str:
    """``text`` in a form PostgreSQL can store: NUL as ``\\u0000``, lone surrogates as
    ``\\udXXX`` (everything else as it is)."""
    return text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which the database cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (e.g. \\ud800), which is not Unicode text"
    return None


def unstorable(value: Any, top: str = "(message)") -> str | None:
    """Where a string the database cannot hold sits in a JSON value (keys included), with why;
    None if there is none."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str) and (problem := _string_problem(item)):
            return f"{path or top}: {problem}"
        if isinstance(item, dict):
            for key, child in item.items():
                where = f"{path}/{escaped(key)}".lstrip("/")
                if problem := _string_problem(key):
                    return f"{where} (a key): {problem}"
                stack.append((where, child))
        elif isinstance(item, list):
            stack.extend((f"{path}/{i}".lstrip("/"), child) for i, child in enumerate(item))
    return None


def unstorable_json(value: Any, top: str) -> str | None:
    """Why PostgreSQL's JSONB cannot hold ``value`` (a value the engine produced: an output, an
    item), naming where: a string it cannot store, or NaN/Infinity, which JSON has no words
    for; None if it can. E.g. ``item 2 at name: contains a NUL character ...``."""
    if problem := unstorable(value, ""):  # "" when the value itself is the string
        return f"{top}{problem}" if problem.startswith(":") else f"{top} at {problem}"
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return f"{top}: holds NaN or Infinity, which JSON cannot represent"
    except TypeError as exc:
        return f"{top}: not JSON ({exc})"
    return None


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
        _check_attributes(envelope.attributes)
        if envelope.attributes.get("eventType") == "OBJECT_FINALIZE":
            return _object_finalized(envelope)
        return _action_message(_json_object(envelope), envelope.attributes)
    except BadMessage as exc:
        raise BadMessage(exc.reason, message_id=envelope.message_id) from None


def _check_attributes(attributes: Mapping[str, str]) -> None:
    if problem := unstorable(dict(attributes), "(attributes)"):
        raise BadMessage(f"attribute {problem}")


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


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _json_object(envelope: Envelope) -> dict[str, Any]:
    value = loads(_decode(envelope))
    if not isinstance(value, dict):
        raise BadMessage(f"message data must be a JSON object, got {type(value).__name__}")
    if problem := unstorable(value):
        raise BadMessage(f"message data {problem}")
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
    if problem := schemas.problem(validator(action), body, "(message)"):
        raise BadMessage(f"{action}: {problem}")
    fields = {k: v for k, v in body.items() if k != "action"}
    if action == Action.SIGNAL and (size := len(encode(fields.get("payload", {})))) > (
        MAX_SIGNAL_PAYLOAD_BYTES
    ):
        raise BadMessage(
            f"signal: payload is {size} bytes encoded; the limit is {MAX_SIGNAL_PAYLOAD_BYTES}"
        )
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
