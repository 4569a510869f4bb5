"""Driving ingestion end to end in one process: the real storage emulator, the real PostgreSQL,
the engine publishing into memory; notifications parsed as the router parses them, and every
published message (run_task, poll_task) delivered until the batches settle. The clock moves
only when nothing is left to deliver, so held retries and polls come due."""

from __future__ import annotations

import base64
import dataclasses
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.engine.sweeper import Sweeper
from dagrelay.ingest import Ingestor, Runtime, install, load_sources
from dagrelay.ingest import pipeline as ingest_pipeline
from dagrelay.ingest.loader import Loader, LoadJob
from dagrelay.ingest.sources import Column, Sources
from dagrelay.ingest.storage import GcsObjectStore
from dagrelay.local import gcs
from dagrelay.messages import Envelope, ObjectFinalized, PollTask, parse
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration.helpers import EVENTS_TOPIC, as_run_task

SOURCES = load_sources()


class FakeLoader:
    """BigQuery's jobs as far as ingestion sees them: one job per id, done at once with
    ``rows`` rows unless told to fail; every submit recorded."""

    def __init__(self, rows: int = 4) -> None:
        self.rows = rows
        self.lock = threading.Lock()
        self.jobs: dict[str, LoadJob] = {}
        self.submitted: list[dict[str, Any]] = []
        self.fail_next: str | None = None  # error of the next job (retryable)

    def submit(self, *, job_id: str, uri: str, table: str, columns: tuple[Column, ...]) -> None:
        with self.lock:
            if job_id in self.jobs:
                return
            self.submitted.append({"job_id": job_id, "uri": uri, "table": table})
            error, self.fail_next = self.fail_next, None
            rows = 0 if error else self.rows
            self.jobs[job_id] = LoadJob(job_id, done=True, rows=rows, error=error)

    def job(self, job_id: str) -> LoadJob | None:
        with self.lock:
            return self.jobs.get(job_id)


class Harness:
    def __init__(
        self,
        *,
        db: Engine,
        engine: DagEngine,
        publisher: InMemoryPublisher,
        clock: FakeClock,
        gcs_client: Any,
        bucket: str,
        loader: Loader,
        sources: Sources = SOURCES,
    ) -> None:
        self.db, self.engine, self.publisher, self.clock = db, engine, publisher, clock
        self.gcs_client, self.bucket, self.loader = gcs_client, bucket, loader
        self.runtime = Runtime(
            db=db,
            store=GcsObjectStore(gcs_client, timeout_s=5, retry_deadline_s=2),
            loader=loader,
            sources=sources,
            start_batch=engine.start_batch,
            clock=clock,
            inbox_bucket=bucket,
        )
        self.ingestor = Ingestor(self.runtime)

    def upload(self, name: str, data: bytes, bucket: str | None = None) -> ObjectFinalized:
        """Upload, then parse the notification GCS would publish, as the router does."""
        bucket = bucket or self.bucket
        self.gcs_client.bucket(bucket).blob(name).upload_from_string(data)
        return self.notification(bucket, name)

    def notification(
        self, bucket: str, name: str, generation: int | None = None
    ) -> ObjectFinalized:
        host = os.environ["STORAGE_EMULATOR_HOST"]
        if generation is None:
            body, attributes = gcs.finalize_message(gcs.object_resource(host, bucket, name))
        else:
            body = b"{}"
            attributes = {
                "bucketId": bucket,
                "objectId": name,
                "objectGeneration": str(generation),
                "eventType": "OBJECT_FINALIZE",
            }
        envelope = Envelope(base64.b64encode(body).decode(), attributes, message_id="1")
        message = parse(envelope)
        assert isinstance(message, ObjectFinalized)
        return message

    def ingest(self, obj: ObjectFinalized) -> str:
        """Notify, then deliver everything until the batches settle."""
        answer = self.ingestor(obj)
        self.drive()
        return answer

    def drive(self, max_steps: int = 500, step_s: float = 30, idle_rounds: int = 40) -> list[Any]:
        """Deliver until nothing has happened for ``idle_rounds`` clock steps of ``step_s``
        (enough for retries to come due and a killed worker's lease to expire)."""
        outcomes: list[tuple[str, RunOutcome]] = []
        idle = 0
        while len(outcomes) < max_steps:
            messages = self.publisher.drain(EVENTS_TOPIC)
            if messages:
                idle = 0
                outcomes += [self.deliver(message.payload, message) for message in messages]
                continue
            if idle >= idle_rounds:
                return outcomes
            idle += 1
            self.clock.advance(step_s)
            Sweeper(self.engine).relay_outbox(0)
            self.expire()
        raise AssertionError(f"ingestion does not settle: {outcomes[-10:]}")

    def deliver(self, payload: Mapping[str, Any], message: Any) -> tuple[str, RunOutcome]:
        if payload["action"] == "poll_task":
            poll = PollTask(payload["batch_id"], payload["task"], payload["attempt"])
            return poll.task, self.engine.poll_task(poll)
        run = as_run_task(message)
        return run.task, self.engine.run_task(run)

    def expire(self) -> int:
        return Sweeper(self.engine).expire_leases()

    def file(self, name: str) -> dict[str, Any]:
        with self.db.connect() as conn:
            return dict(
                conn.execute(
                    text(
                        "SELECT *, status::text AS status FROM file_log WHERE name = :n "
                        "ORDER BY file_id DESC LIMIT 1"
                    ),
                    {"n": name},
                )
                .mappings()
                .one()
            )

    def files(self) -> list[tuple[str, str]]:
        with self.db.connect() as conn:
            rows = conn.execute(text("SELECT name, status::text FROM file_log ORDER BY file_id"))
            return [(r[0], r[1]) for r in rows]

    def batches(self) -> list[tuple[str, str, str]]:
        with self.db.connect() as conn:
            rows = conn.execute(
                text("SELECT pipeline, batch_id, status::text FROM batches ORDER BY created_at")
            )
            return [(r[0], r[1], r[2]) for r in rows]

    def names(self) -> list[str]:
        return sorted(b.name for b in self.gcs_client.list_blobs(self.bucket))

    def read(self, name: str) -> bytes:
        return bytes(self.gcs_client.bucket(self.bucket).blob(name).download_as_bytes())

    def reconfigured(self, **changes: Any) -> Harness:
        """The same harness with other runtime parts (loader, sources, store), installed."""
        self.runtime = dataclasses.replace(self.runtime, **changes)
        self.loader = self.runtime.loader
        self.ingestor = Ingestor(self.runtime)
        install(self.runtime)
        return self


@pytest.fixture
def ingest_harness(
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    gcs_client: Any,
    gcs_bucket: str,
) -> Iterator[Harness]:
    """A harness on this test's database and bucket with a FakeLoader, its runtime installed
    (and uninstalled afterwards)."""
    # ensure() applies the ingest pipelines once per process and database URL; this test's
    # database is the shared one, emptied since, so they are applied again.
    ingest_pipeline.forget_applied()
    harness = Harness(
        db=db,
        engine=engine,
        publisher=publisher,
        clock=clock,
        gcs_client=gcs_client,
        bucket=gcs_bucket,
        loader=FakeLoader(),
    )
    install(harness.runtime)
    try:
        yield harness
    finally:
        install(None)
