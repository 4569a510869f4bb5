"""Message parsing: a table of bad and good messages, then garbage from hypothesis."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagrelay.errors import BadMessage
from dagrelay.messages import (
    ACTIONS,
    CancelBatch,
    Envelope,
    Message,
    ObjectFinalized,
    Rerun,
    RunTask,
    StartBatch,
    Sweep,
    envelope_from_push,
    parse,
)


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def env(body: Any, **attributes: str) -> Envelope:
    return Envelope(data=b64(json.dumps(body)), attributes=attributes, message_id="m1")


GCS_ATTRS = {
    "notificationConfig": "projects/_/buckets/inbox/notificationConfigs/1",
    "eventType": "OBJECT_FINALIZE",
    "payloadFormat": "JSON_API_V1",
    "bucketId": "inbox",
    "objectId": "sales/2024-03.csv",
    "objectGeneration": "1709251200123456",
    "eventTime": "2024-03-01T00:00:00.123456Z",
}
GCS_RESOURCE = {
    "kind": "storage#object",
    "id": "inbox/sales/2024-03.csv/1709251200123456",
    "name": "sales/2024-03.csv",
    "bucket": "inbox",
    "generation": "1709251200123456",
    "size": "1024",
    "md5Hash": "1B2M2Y8AsgTpgAmY7PhCfg==",
    "contentType": "text/csv",
    "timeCreated": "2024-03-01T00:00:00.123Z",
    "updated": "2024-03-01T00:00:00.123Z",
}


@pytest.mark.parametrize(
    ("envelope", "expected"),
    [
        pytest.param(
            env({"action": "start_batch", "pipeline": "p", "batch_id": "2024-03"}),
            StartBatch(pipeline="p", batch_id="2024-03"),
            id="start_batch minimal",
        ),
        pytest.param(
            env(
                {
                    "action": "start_batch",
                    "pipeline": "p",
                    "batch_id": "b1",
                    "params": {"month": "03"},
                    "start_task": "t",
                    "triggered_by": "me",
                },
                action="start_batch",
            ),
            StartBatch("p", "b1", {"month": "03"}, "t", "me"),
            id="start_batch full, matching attribute",
        ),
        pytest.param(
            env({"action": "run_task", "batch_id": "b", "task": "t", "pipeline": "p"}),
            RunTask(batch_id="b", task="t", pipeline="p"),
            id="run_task",
        ),
        pytest.param(env({"action": "sweep"}), Sweep(), id="sweep"),
        pytest.param(env({"action": "sweep", "older_than_s": 5}), Sweep(5), id="sweep older"),
        pytest.param(
            env({"action": "rerun", "batch_id": "b", "task": "t", "downstream": True}),
            Rerun(batch_id="b", task="t", downstream=True),
            id="rerun",
        ),
        pytest.param(
            env({"action": "cancel_batch", "pipeline": "p", "batch_id": "b"}),
            CancelBatch("p", "b"),
            id="cancel_batch",
        ),
        pytest.param(
            Envelope(b64(json.dumps(GCS_RESOURCE)), GCS_ATTRS, "m2"),
            ObjectFinalized("inbox", "sales/2024-03.csv", 1709251200123456, GCS_RESOURCE),
            id="gcs object finalize",
        ),
        pytest.param(
            Envelope(None, {**GCS_ATTRS, "payloadFormat": "NONE"}, "m3"),
            ObjectFinalized("inbox", "sales/2024-03.csv", 1709251200123456, {}),
            id="gcs notification without payload",
        ),
    ],
)
def test_parse_good(envelope: Envelope, expected: Message) -> None:
    assert parse(envelope) == expected


BAD = [
    pytest.param(Envelope(None), "no data", id="no data"),
    pytest.param(Envelope(""), "no data", id="empty data"),
    pytest.param(Envelope("not base64!!"), "not valid base64", id="bad base64"),
    pytest.param(Envelope("YWJj ZA=="), "not valid base64", id="base64 with space"),
    pytest.param(Envelope("ñññ"), "not valid base64", id="non-ascii base64"),
    pytest.param(Envelope(b64(b"\xff\xfe{}")), "not UTF-8", id="not utf-8"),
    pytest.param(Envelope(b64("{action: x}")), "not JSON", id="bad json"),
    pytest.param(Envelope(b64("[1, 2]")), "must be a JSON object, got list", id="json list"),
    pytest.param(Envelope(b64('"hi"')), "must be a JSON object, got str", id="json string"),
    pytest.param(Envelope(b64("null")), "got NoneType", id="json null"),
    pytest.param(env({"pipeline": "p"}), "no 'action' string", id="missing action"),
    pytest.param(env({"action": 3}), "no 'action' string", id="action not a string"),
    pytest.param(env({"action": "explode"}), "unknown action 'explode'", id="unknown action"),
    pytest.param(
        env({"action": "start_batch", "batch_id": "b"}),
        "start_batch: (message): 'pipeline' is a required property",
        id="missing required",
    ),
    pytest.param(
        env({"action": "start_batch", "pipeline": "p", "batch_id": "b c"}),
        "start_batch: batch_id: 'b c' does not match",
        id="bad batch_id pattern",
    ),
    pytest.param(
        env({"action": "start_batch", "pipeline": "p", "batch_id": "b", "params": {"1x": 1}}),
        "start_batch: params: ",
        id="bad params key, path named",
    ),
    pytest.param(
        env({"action": "run_task", "batch_id": "b", "task": "t", "extra": 1}),
        "run_task: (message): unknown key 'extra'",
        id="extra property",
    ),
    pytest.param(
        env({"action": "start_batch", "pipline": "p", "batch_id": "b"}),
        "start_batch: (message): unknown key 'pipline' (did you mean 'pipeline'?)",
        id="misspelt key, not only a missing one",
    ),
    pytest.param(
        env({"action": "sweep", "older_than_s": -1}),
        "sweep: older_than_s: -1 is less than the minimum",
        id="sweep negative",
    ),
    pytest.param(
        env({"action": "rerun", "batch_id": "b", "task": "t", "downstream": "yes"}),
        "rerun: downstream: 'yes' is not of type 'boolean'",
        id="wrong type",
    ),
    pytest.param(
        env({"action": "run_task", "batch_id": "b", "task": "t"}, action="start_batch"),
        "attribute action='start_batch' disagrees with data action='run_task'",
        id="attribute mismatch",
    ),
    pytest.param(
        Envelope(b64(json.dumps(GCS_RESOURCE)), {**GCS_ATTRS, "objectGeneration": "x"}),
        "numeric objectGeneration",
        id="gcs generation not numeric",
    ),
    pytest.param(
        Envelope(
            b64(json.dumps(GCS_RESOURCE)), {k: v for k, v in GCS_ATTRS.items() if k != "bucketId"}
        ),
        "lacks bucketId",
        id="gcs missing bucket",
    ),
    pytest.param(
        Envelope(b64("[]"), GCS_ATTRS), "must be a JSON object", id="gcs payload not an object"
    ),
    pytest.param(Envelope("A" * 1_400_000), "larger than 1000000 bytes", id="too large"),
]


@pytest.mark.parametrize(("envelope", "reason"), BAD)
def test_parse_bad(envelope: Envelope, reason: str) -> None:
    with pytest.raises(BadMessage) as info:
        parse(envelope)
    assert reason in info.value.reason
    assert info.value.message_id == envelope.message_id


# Found while writing these tests: json.loads raises RecursionError / ValueError (not
# JSONDecodeError) for these, and int() rejects some str.isdigit() strings; parse() lets them
# escape, so the router would answer 500 and Pub/Sub would redeliver forever.
@pytest.mark.parametrize(
    "envelope",
    [
        pytest.param(Envelope(b64("[" * 100_000)), id="deeply nested json"),
        pytest.param(Envelope(b64('{"action": ' + "1" * 5000 + "}")), id="huge integer"),
        pytest.param(
            Envelope(None, {**GCS_ATTRS, "payloadFormat": "NONE", "objectGeneration": "\u00b2"}),
            id="gcs generation superscript digit",
        ),
    ],
)
def test_parse_pathological_input_is_a_bad_message(envelope: Envelope) -> None:
    with pytest.raises(BadMessage):
        parse(envelope)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(None, "no 'message' object", id="none"),
        pytest.param([], "no 'message' object", id="list"),
        pytest.param({"message": "x"}, "no 'message' object", id="message not object"),
        pytest.param(
            {"message": {"data": "e30=", "attributes": {"a": 1}}},
            "attributes must map strings to strings",
            id="attribute not a string",
        ),
        pytest.param({"message": {"data": 12}}, "data must be a base64 string", id="data number"),
    ],
)
def test_envelope_from_push_bad(body: Any, reason: str) -> None:
    with pytest.raises(BadMessage, match=reason):
        envelope_from_push(body)


def test_envelope_from_push_good() -> None:
    body = {
        "message": {"data": "e30=", "attributes": {"action": "sweep"}, "messageId": "42"},
        "subscription": "projects/p/subscriptions/s",
    }
    assert envelope_from_push(body) == Envelope("e30=", {"action": "sweep"}, "42")


# -- property tests: whatever arrives, parse() returns a message or raises BadMessage ----------


def _parse_or_bad(envelope: Envelope) -> None:
    try:
        result = parse(envelope)
    except BadMessage as exc:
        reason = exc.reason
        assert reason
        return
    assert isinstance(result, StartBatch | RunTask | Sweep | Rerun | CancelBatch | ObjectFinalized)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
attribute_maps = st.dictionaries(
    st.sampled_from(["action", "eventType", "bucketId", "objectId", "objectGeneration", "x"]),
    st.text(max_size=12) | st.sampled_from([*ACTIONS, "OBJECT_FINALIZE", "123"]),
    max_size=4,
)
# As many examples as the profile gives (tests/conftest.py): 300 in CI, 25 in a developer's run.
PROPERTY_SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(raw=st.binary(max_size=200), attributes=attribute_maps)
def test_random_bytes(raw: bytes, attributes: dict[str, str]) -> None:
    _parse_or_bad(Envelope(base64.b64encode(raw).decode(), attributes, "id"))


@PROPERTY_SETTINGS
@given(data=st.text(max_size=60) | st.none())
def test_random_data_strings(data: str | None) -> None:
    _parse_or_bad(Envelope(data))


@PROPERTY_SETTINGS
@given(value=json_values)
def test_random_json_values(value: Any) -> None:
    _parse_or_bad(Envelope(b64(json.dumps(value))))


@PROPERTY_SETTINGS
@given(
    action=st.sampled_from([*ACTIONS, "", "nope"]) | st.text(max_size=10),
    fields=st.dictionaries(
        st.sampled_from(
            ["pipeline", "batch_id", "task", "params", "start_task", "downstream", "older_than_s"]
        )
        | st.text(max_size=6),
        json_values,
        max_size=5,
    ),
    attributes=attribute_maps,
)
def test_random_dicts_with_action(
    action: str, fields: dict[str, Any], attributes: dict[str, str]
) -> None:
    _parse_or_bad(Envelope(b64(json.dumps({**fields, "action": action})), attributes))


@PROPERTY_SETTINGS
@given(body=json_values)
def test_random_push_bodies(body: Any) -> None:
    try:
        envelope = envelope_from_push(body)
    except BadMessage:
        return
    _parse_or_bad(envelope)
