"""The propagation helpers of dagrelay.tracing and the trace id on a JSON log line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dagrelay import logs, tracing
from dagrelay.store.outbox import OutgoingMessage, _batch_key, with_trace_context

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider, project_id="p")
    yield exporter
    tracing.uninstall()


def test_off_is_a_no_op() -> None:
    assert not tracing.enabled()
    with tracing.batch_span("etl", "b1") as context:
        assert context is None
    with tracing.delivery({tracing.TRACEPARENT: PARENT}, "run_task"), tracing.attempt("a") as a:
        a.end("SUCCESS")
        assert tracing.current_traceparent() is None
        assert tracing.log_fields() == {}


def test_delivery_continues_the_message_trace(spans: InMemorySpanExporter) -> None:
    with (
        tracing.delivery({tracing.TRACEPARENT: PARENT}, "run_task"),
        tracing.attempt("attempt a", task="a", attempt=1) as a,
    ):
        a.end("ERROR", "boom")
    attempt, delivery = spans.get_finished_spans()
    assert f"{delivery.context.trace_id:032x}" == PARENT.split("-")[1]
    assert f"{delivery.parent.span_id:016x}" == PARENT.split("-")[2]  # type: ignore[union-attr]
    assert attempt.parent.span_id == delivery.context.span_id  # type: ignore[union-attr]
    assert attempt.attributes == {
        "dagrelay.task": "a",
        "dagrelay.attempt": 1,
        "dagrelay.outcome": "ERROR",
    }
    assert attempt.status.description == "boom"


@pytest.mark.parametrize("value", [None, "", "00-xyz", "01-" + PARENT[3:], PARENT + "-extra"])
def test_a_missing_or_malformed_traceparent_starts_a_new_root(
    spans: InMemorySpanExporter, value: str | None
) -> None:
    attributes = {} if value is None else {tracing.TRACEPARENT: value}
    with tracing.delivery(attributes, "run_task"):
        pass
    (delivery,) = spans.get_finished_spans()
    assert delivery.parent is None


def test_a_batch_is_a_new_trace_linked_to_its_sender(spans: InMemorySpanExporter) -> None:
    with (
        tracing.delivery({tracing.TRACEPARENT: PARENT}, "start_batch", span=False),
        tracing.batch_span("etl", "b1", version=3) as context,
    ):
        assert context == tracing.current_traceparent()
    (batch,) = spans.get_finished_spans()
    assert batch.parent is None
    assert context is not None
    assert context.startswith(f"00-{batch.context.trace_id:032x}-{batch.context.span_id:016x}-")
    assert tracing.valid_traceparent(context)
    assert [f"{link.context.trace_id:032x}" for link in batch.links] == [PARENT.split("-")[1]]
    assert batch.attributes == {
        "dagrelay.pipeline": "etl",
        "dagrelay.batch": "b1",
        "dagrelay.version": 3,
    }


def test_the_log_line_carries_the_trace_id(spans: InMemorySpanExporter) -> None:
    record = logging.makeLogRecord({"msg": "task claimed", "levelname": "INFO", "task": "a"})
    with tracing.delivery({tracing.TRACEPARENT: PARENT}, "run_task"):
        span_id = trace.get_current_span().get_span_context().span_id
        line = json.loads(logs.JsonFormatter().format(record))
    trace_id = PARENT.split("-")[1]
    assert line["logging.googleapis.com/trace"] == f"projects/p/traces/{trace_id}"
    assert line["logging.googleapis.com/spanId"] == f"{span_id:016x}"
    assert line["logging.googleapis.com/trace_sampled"] is True
    assert line["task"] == "a"
    outside = json.loads(logs.JsonFormatter().format(record))
    assert "logging.googleapis.com/trace" not in outside


def test_the_relay_stamps_a_batch_message_and_keeps_a_sender_s() -> None:
    about = OutgoingMessage("events", {"pipeline": "etl", "batch_id": "b1", "task": "a"})
    assert _batch_key(about) == ("etl", "b1")
    assert with_trace_context(about, PARENT).attributes == {tracing.TRACEPARENT: PARENT}
    assert with_trace_context(about, None) is about
    own = OutgoingMessage("events", about.payload, {tracing.TRACEPARENT: "00-" + "1" * 32 + "-"})
    assert _batch_key(own) is None
    assert with_trace_context(own, PARENT) is own
    assert _batch_key(OutgoingMessage("events", {"action": "sweep"})) is None


def test_configure_refuses_an_unknown_exporter() -> None:
    with pytest.raises(ValueError, match="'jaeger'"):
        tracing.configure("jaeger", project_id="p")
    tracing.configure("off", project_id="p")
    assert not tracing.enabled()


def test_console_exporter_turns_tracing_on(capsys: pytest.CaptureFixture[str]) -> None:
    tracing.configure("console", project_id="p", sample_ratio=1.0)
    try:
        assert tracing.enabled()
        with tracing.batch_span("etl", "b1") as context:
            assert tracing.valid_traceparent(context)
        tracing.flush()
        assert '"name": "batch etl/b1"' in capsys.readouterr().err
    finally:
        tracing.uninstall()


def test_the_cloud_trace_exporter_is_installed() -> None:
    from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter  # noqa: PLC0415

    assert callable(CloudTraceSpanExporter)
