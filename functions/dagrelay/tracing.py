"""Tracing: one trace per batch, one span per attempt, the context carried across Pub/Sub hops in
the W3C ``traceparent`` message attribute (ARCHITECTURE.md, "Tracing and metrics").

Off by default. Off, nothing here imports OpenTelemetry and every helper is a no-op: the hot
path pays one ``if`` per span. On (``configure`` from the ``tracing`` setting, or ``install``
with a provider of the caller's, as tests do), OpenTelemetry is imported then:

- ``batch_span``: the root of a batch's trace, made where the batch is created; its
  ``traceparent`` is stored on the batch row (``batches.trace_context``) and the outbox relay
  copies it into every message about the batch (``store/outbox.py``), whoever writes the row
  (named SQL, SQL functions) and whenever it is published (after commit, or by the sweeper).
- ``delivery``: the router's span of one message, a child of its ``traceparent`` (none: a new
  root, as for older senders).
- ``attempt``: one attempt of a task, under the delivery; a handler's own spans
  (``opentelemetry.trace.get_tracer(...)``) nest under it.
- ``log_fields``: what a JSON log line carries so Cloud Logging links it to its trace.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"  # the message attribute (W3C Trace Context)
EXPORTERS = ("off", "console", "gcp")
TRACEPARENT_FORMAT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")

_LOG_TRACE = "logging.googleapis.com/trace"
_LOG_SPAN = "logging.googleapis.com/spanId"
_LOG_SAMPLED = "logging.googleapis.com/trace_sampled"


class _State:
    provider: Any = None  # an opentelemetry.sdk TracerProvider when on
    tracer: Any = None
    project_id: str = ""


_state = _State()


def enabled() -> bool:
    return _state.tracer is not None


def configure(exporter: str, *, project_id: str, sample_ratio: float = 1.0) -> None:
    """Turn tracing on for this process (idempotent; "off" does nothing): spans of sampled
    traces go to Cloud Trace ("gcp", batched, flushed at the end of each delivery) or to stderr
    ("console"). Sets OpenTelemetry's global provider, so handlers' spans go there too."""
    if exporter not in EXPORTERS:
        raise ValueError(f"tracing exporter {exporter!r}: expected one of {EXPORTERS}")
    if exporter == "off" or enabled():
        return
    from opentelemetry import trace  # noqa: PLC0415 - only when tracing is on
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace import export as sdk_export  # noqa: PLC0415
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased  # noqa: PLC0415

    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        resource=Resource.create({"service.name": "dagrelay"}),
    )
    if exporter == "gcp":
        from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter  # noqa: PLC0415

        processor: Any = sdk_export.BatchSpanProcessor(
            CloudTraceSpanExporter(project_id=project_id)  # type: ignore[no-untyped-call]
        )
    else:
        # stderr: stdout carries the JSON log lines
        processor = sdk_export.SimpleSpanProcessor(sdk_export.ConsoleSpanExporter(out=sys.stderr))
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    install(provider, project_id=project_id)


def install(provider: Any, *, project_id: str) -> None:
    """Use ``provider`` (an SDK TracerProvider) for dagrelay's spans: ``configure`` calls it; a
    test passes a provider with an in-memory exporter."""
    _state.provider = provider
    _state.tracer = provider.get_tracer("dagrelay")
    _state.project_id = project_id


def uninstall() -> None:
    """Tracing off again (tests)."""
    _state.provider = _state.tracer = None
    _state.project_id = ""


def flush(timeout_ms: int = 2000) -> None:
    """Export what is buffered: a Cloud Function's CPU may be throttled once it has answered."""
    if _state.provider is not None:
        _state.provider.force_flush(timeout_ms)


def valid_traceparent(value: object) -> bool:
    return isinstance(value, str) and TRACEPARENT_FORMAT.fullmatch(value) is not None


@contextmanager
def batch_span(pipeline: str, batch_id: str, **attributes: Any) -> Iterator[str | None]:
    """The root span of a new batch's trace (linked to the current span: what started it).
    Yields its ``traceparent`` for the batch row; None when tracing is off."""
    if _state.tracer is None:
        yield None
        return
    from opentelemetry import context, trace  # noqa: PLC0415 - only when tracing is on

    current = trace.get_current_span().get_span_context()
    links = [trace.Link(current)] if current.is_valid else []
    with _state.tracer.start_as_current_span(
        f"batch {pipeline}/{batch_id}",
        context=context.Context(),  # a new root: each batch is one trace
        links=links,
        attributes=_attributes(pipeline=pipeline, batch=batch_id, **attributes),
    ) as span:
        yield _traceparent(span.get_span_context())


@contextmanager
def delivery(attributes: Mapping[str, Any], action: str, *, span: bool = True) -> Iterator[None]:
    """The router's span of one message: a child of its ``traceparent`` attribute (a missing or
    malformed one: a new root). ``span=False``: the sender's context is only made current."""
    if _state.tracer is None:
        yield
        return
    from opentelemetry import context, trace  # noqa: PLC0415 - only when tracing is on

    if not span:
        token = context.attach(extract(attributes))
        try:
            yield
        finally:
            context.detach(token)
        return
    with _state.tracer.start_as_current_span(
        f"dagrelay {action}",
        context=extract(attributes),
        kind=trace.SpanKind.CONSUMER,
        attributes={"messaging.system": "gcp_pubsub", "dagrelay.action": action},
    ):
        yield


class Attempt:
    """The span of one attempt as the engine holds it: ``end`` records the outcome."""

    def __init__(self, span: Any = None) -> None:
        self.span = span

    def end(self, outcome: str, error: str | None = None) -> None:
        if self.span is None:
            return
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

        self.span.set_attribute("dagrelay.outcome", outcome)
        if error is not None:
            self.span.set_status(Status(StatusCode.ERROR, error[:500]))


_NO_ATTEMPT = Attempt()


@contextmanager
def attempt(name: str, **attributes: Any) -> Iterator[Attempt]:
    """The span of one attempt (current while its handler runs, so the handler's spans nest)."""
    if _state.tracer is None:
        yield _NO_ATTEMPT
        return
    with _state.tracer.start_as_current_span(name, attributes=_attributes(**attributes)) as span:
        yield Attempt(span)


def extract(attributes: Mapping[str, Any]) -> Any:
    """The OpenTelemetry context of a message's ``traceparent`` (an empty context without a
    valid one: the span made in it is a root)."""
    from opentelemetry import context  # noqa: PLC0415 - only when tracing is on
    from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
        TraceContextTextMapPropagator,
    )

    value = attributes.get(TRACEPARENT)
    if not valid_traceparent(value):
        return context.Context()
    return TraceContextTextMapPropagator().extract({TRACEPARENT: value})


def current_traceparent() -> str | None:
    """The current span's ``traceparent``; None when tracing is off or no span is current."""
    if _state.tracer is None:
        return None
    from opentelemetry import trace  # noqa: PLC0415 - only when tracing is on

    span_context = trace.get_current_span().get_span_context()
    return _traceparent(span_context) if span_context.is_valid else None


def log_fields() -> dict[str, Any]:
    """The fields that link a JSON log line to its trace in Cloud Logging (empty when tracing
    is off or no span is current)."""
    if _state.tracer is None:
        return {}
    from opentelemetry import trace  # noqa: PLC0415 - only when tracing is on

    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    return {
        _LOG_TRACE: f"projects/{_state.project_id}/traces/{span_context.trace_id:032x}",
        _LOG_SPAN: f"{span_context.span_id:016x}",
        _LOG_SAMPLED: span_context.trace_flags.sampled,
    }


def _traceparent(span_context: Any) -> str:
    flags = int(span_context.trace_flags)
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags:02x}"


def _attributes(**values: Any) -> dict[str, Any]:
    """Span attributes under ``dagrelay.``; None left out (OpenTelemetry refuses it)."""
    return {f"dagrelay.{k}": v for k, v in values.items() if v is not None}
