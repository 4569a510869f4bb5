"""One trace per batch across Pub/Sub hops: the spans of a 3-task batch (a -> b -> c) read from an
in-memory exporter, the messages carried between deliveries exactly as the relay publishes them
(attributes and all) and parsed by the router; once through the real Pub/Sub emulator."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud import pubsub_v1
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Engine, text

from dagrelay import tracing
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.handlers.registry import HandlerContext, HandlerRegistry
from dagrelay.messages import Envelope, encode
from dagrelay.pubsub import PubSubPublisher
from dagrelay.router.dispatch import Router
from dagrelay.router.wiring import build_engine
from dagrelay.states import Action, BatchStatus
from dagrelay.store.outbox import InMemoryPublisher, OutgoingMessage, TraceContexts
from tests.conftest import FakeClock, engine_settings
from tests.integration.helpers import EVENTS_TOPIC, batch_status

pytestmark = pytest.mark.integration

SENDER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
trace.set_tracer_provider(_PROVIDER)  # handlers' own spans: OpenTelemetry's global provider


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    tracing.install(_PROVIDER, project_id="p")
    yield _EXPORTER
    tracing.uninstall()


def traced(ctx: HandlerContext[Any]) -> dict[str, Any]:
    """A handler with a span of its own."""
    with trace.get_tracer("acme.handlers").start_as_current_span(f"work {ctx.task}"):
        return {"task": ctx.task}


@pytest.fixture
def engine(db: Engine, publisher: InMemoryPublisher, clock: FakeClock) -> DagEngine:
    registry = HandlerRegistry()
    registry.register("test.traced", traced)
    return build_engine(
        engine_settings(), db=db, publisher=publisher, registry=registry, clock=clock
    )


def insert_chain(db: Engine) -> None:
    """The pipeline etl: a -> b -> c."""
    insert = "INSERT INTO task_dependencies (child_task_id, parent_task_id) VALUES "
    with db.begin() as conn:
        ids = {
            name: conn.execute(
                text(
                    "INSERT INTO tasks (name, pipeline, handler) VALUES (:n, 'etl', 'test.traced')"
                    " RETURNING task_id"
                ),
                {"n": name},
            ).scalar_one()
            for name in ("a", "b", "c")
        }
        conn.execute(
            text(insert + "(:b, :a), (:c, :b)"),
            {"a": ids["a"], "b": ids["b"], "c": ids["c"]},
        )


@pytest.fixture
def router(engine: DagEngine, db: Engine, clock: FakeClock) -> Router:
    insert_chain(db)
    return Router(engine, db, clock, dead_letter_topic="dagrelay-dead-letter")


def envelope(message: OutgoingMessage) -> Envelope:
    data = base64.b64encode(message.data()).decode()
    return Envelope(data, dict(message.attributes), f"outbox-{message.outbox_id}")


def start(attributes: dict[str, str]) -> Envelope:
    payload = {"action": Action.START_BATCH.value, "pipeline": "etl", "batch_id": "b1"}
    data = base64.b64encode(encode(payload)).decode()
    return Envelope(data, {"action": Action.START_BATCH.value, **attributes}, "start-1")


def deliver_all(router: Router, publisher: InMemoryPublisher) -> list[OutgoingMessage]:
    delivered: list[OutgoingMessage] = []
    while messages := publisher.drain(EVENTS_TOPIC):
        for message in messages:
            router.handle(envelope(message))
        delivered += messages
        assert len(delivered) < 100, "the batch does not converge"
    return delivered


def stored_context(db: Engine) -> str:
    with db.connect() as conn:
        return str(conn.execute(text("SELECT trace_context FROM batches")).scalar_one())


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_a_batch_is_one_trace_across_pubsub_hops(
    router: Router, publisher: InMemoryPublisher, db: Engine, spans: InMemorySpanExporter
) -> None:
    assert router.handle(start({tracing.TRACEPARENT: SENDER})) == "started"
    delivered = deliver_all(router, publisher)
    assert batch_status(db, "etl", "b1") == BatchStatus.SUCCESS

    context = stored_context(db)
    assert [m.attributes.get(tracing.TRACEPARENT) for m in delivered] == [context] * 3
    found = [s for s in spans.get_finished_spans() if s.name.startswith("dagrelay ")]
    assert len(found) == 3  # one delivery span per run_task
    batch = by_name_one(spans, "batch etl/b1")
    assert batch.parent is None  # each batch is a trace of its own, linked to its sender
    assert [f"{link.context.trace_id:032x}" for link in batch.links] == [SENDER.split("-")[1]]
    assert context.split("-")[1:3] == [
        f"{batch.context.trace_id:032x}",
        f"{batch.context.span_id:016x}",
    ]
    trace_id = batch.context.trace_id
    assert {s.context.trace_id for s in spans.get_finished_spans()} == {trace_id}

    deliveries = {parent_of(s) for s in found}
    assert deliveries == {batch.context.span_id}  # every hop continues the batch's trace
    for task in ("a", "b", "c"):
        attempt = by_name_one(spans, f"attempt {task}")
        assert parent_of(attempt) in {s.context.span_id for s in found}
        work = by_name_one(spans, f"work {task}")
        assert parent_of(work) == attempt.context.span_id  # the handler's span nests
        attributes = dict(attempt.attributes or {})
        assert attributes.pop("dagrelay.version") == batch.attributes["dagrelay.version"]  # type: ignore[index]
        assert attributes == {
            "dagrelay.task": task,
            "dagrelay.pipeline": "etl",
            "dagrelay.batch": "b1",
            "dagrelay.attempt": 1,
            "dagrelay.outcome": "SUCCESS",
        }


def by_name_one(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    (span,) = [s for s in spans.get_finished_spans() if s.name == name]
    return span


def test_rows_left_in_the_outbox_carry_the_batch_context_read_from_its_row(
    router: Router,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    db: Engine,
    clock: FakeClock,
    spans: InMemorySpanExporter,
) -> None:
    publisher.fail_with = RuntimeError("Pub/Sub is down")
    assert router.handle(start({})) == "started"
    publisher.fail_with = None
    engine.outbox.trace_contexts = TraceContexts()  # another process: nothing remembered
    assert engine.outbox.relay(cutoff=clock(), limit=10) == 1  # the sweeper's relay
    (message,) = publisher.drain(EVENTS_TOPIC)
    assert message.attributes[tracing.TRACEPARENT] == stored_context(db)
    assert by_name_one(spans, "batch etl/b1").links == ()  # no sender context: no link


def test_a_message_without_traceparent_starts_a_new_root(
    router: Router, publisher: InMemoryPublisher, db: Engine, spans: InMemorySpanExporter
) -> None:
    tracing.uninstall()  # an older engine: batch without a context, messages without one
    assert router.handle(start({})) == "started"
    tracing.install(_PROVIDER, project_id="p")
    (message,) = publisher.drain(EVENTS_TOPIC)
    assert tracing.TRACEPARENT not in message.attributes
    publisher.sent.append(message)
    deliver_all(router, publisher)
    assert batch_status(db, "etl", "b1") == BatchStatus.SUCCESS
    delivery = [s for s in spans.get_finished_spans() if s.name.startswith("dagrelay ")]
    assert delivery
    assert all(s.parent is None for s in delivery)


def test_the_context_survives_the_real_emulator(
    pubsub_emulator: str,
    unique: str,
    db: Engine,
    clock: FakeClock,
    spans: InMemorySpanExporter,
) -> None:
    """The relay publishes with the real client; each message is pulled back from the emulator
    and handed to the router as a push would hand it."""
    project, topic_id = "dagrelay-test", f"trace-events-{unique}"
    publisher_client, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher_client.create_topic(name=publisher_client.topic_path(project, topic_id))
    subscription = subscriber.subscription_path(project, f"trace-router-{unique}")
    subscriber.create_subscription(name=subscription, topic=topic.name)
    registry = HandlerRegistry()
    registry.register("test.traced", traced)
    settings = engine_settings().model_copy(update={"events_topic": topic_id})
    engine = build_engine(
        settings, db=db, publisher=PubSubPublisher(project), registry=registry, clock=clock
    )
    insert_chain(db)
    routed = Router(engine, db, clock, dead_letter_topic="dagrelay-dead-letter")
    assert routed.handle(start({})) == "started"

    carried: list[str] = []
    deadline = time.monotonic() + 60
    while batch_status(db, "etl", "b1") != BatchStatus.SUCCESS:
        assert time.monotonic() < deadline, f"batch is {batch_status(db, 'etl', 'b1')}"
        response = subscriber.pull(subscription=subscription, max_messages=10, timeout=5)
        for received in response.received_messages:
            message = received.message
            carried.append(message.attributes.get(tracing.TRACEPARENT, ""))
            data = base64.b64encode(message.data).decode()
            routed.handle(Envelope(data, dict(message.attributes), message.message_id))
            subscriber.acknowledge(subscription=subscription, ack_ids=[received.ack_id])

    assert carried == [stored_context(db)] * 3
    batch = by_name_one(spans, "batch etl/b1")
    for task in ("a", "b", "c"):
        attempt = by_name_one(spans, f"attempt {task}")
        assert attempt.context.trace_id == batch.context.trace_id
        (delivery,) = [
            s for s in spans.get_finished_spans() if s.context.span_id == parent_of(attempt)
        ]
        assert parent_of(delivery) == batch.context.span_id
    subscriber.delete_subscription(subscription=subscription)
    publisher_client.delete_topic(topic=topic.name)
