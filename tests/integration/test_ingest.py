"""Ingestion against real PostgreSQL and the real storage emulator: bad files rejected and moved
with their reason, duplicates loaded once, Parquet staged with the declared schema, file_log
statuses in order, interrupted ingestions resumed, and a month's sources starting exactly one
pipeline batch even when they finish together."""

from __future__ import annotations

import base64
import io
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.ingest import ingest_object, load_sources, resume_stale
from dagrelay.ingest.sources import Column
from dagrelay.messages import Envelope, ObjectFinalized, parse
from local_emulator import gcs
from tests.conftest import FakeClock

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / "schema" / "pipelines" / "data"
SOURCES = load_sources()
SALES = "inbox/sales/sales_2024-03.csv"
EXPENSES = "inbox/expenses/expenses_2024-03.csv"


class FakeLoader:
    """Records each load; can be told to fail the next ones."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail: BaseException | None = None
        self.lock = threading.Lock()

    def load(self, *, uri: str, table: str, columns: tuple[Column, ...], job_id: str) -> int:
        if self.fail is not None:
            raise self.fail
        with self.lock:
            self.calls.append({"uri": uri, "table": table, "job_id": job_id})
        return 4


def upload(client: Any, bucket: str, name: str, data: bytes) -> ObjectFinalized:
    """Upload, then parse the notification GCS would publish, as the router does."""
    client.bucket(bucket).blob(name).upload_from_string(data)
    body, attributes = gcs.finalize_message(gcs.object_resource(gcs_url(), bucket, name))
    envelope = Envelope(base64.b64encode(body).decode(), attributes, message_id="1")
    message = parse(envelope)
    assert isinstance(message, ObjectFinalized)
    return message


def gcs_url() -> str:
    import os  # noqa: PLC0415

    return os.environ["STORAGE_EMULATOR_HOST"]


def names(client: Any, bucket: str) -> list[str]:
    return sorted(b.name for b in client.list_blobs(bucket))


def read(client: Any, bucket: str, name: str) -> bytes:
    return bytes(client.bucket(bucket).blob(name).download_as_bytes())


def file_row(db: Engine, name: str) -> Any:
    with db.connect() as conn:
        return conn.execute(text("SELECT * FROM file_log WHERE name = :n"), {"n": name}).one()


@pytest.fixture
def ingest(db: Engine, engine: DagEngine, gcs_client: Any, clock: FakeClock) -> Callable[..., str]:
    loader = FakeLoader()

    def run(obj: ObjectFinalized, **kw: Any) -> str:
        return ingest_object(
            obj,
            db=db,
            storage_client=gcs_client,
            loader=kw.pop("loader", loader),
            engine=engine,
            sources=SOURCES,
            clock=clock,
            **kw,
        )

    run.loader = loader  # type: ignore[attr-defined]
    return run


SALES_HEADER = b"sale_date,region,product,quantity,amount\n"


@pytest.mark.parametrize(
    ("file_name", "data", "reason"),
    [
        ("sales_2024-03.csv", b"", "file is empty"),
        ("sales_2024-03.csv", SALES_HEADER, "file has a header but no data rows"),
        ("sales_2024-03.csv", b"sale_date,region\n2024-03-01,n\n", "missing required column"),
        ("sales_2024-03.csv", b"sale_date,region,quantity,amount,vat\n", "undeclared column"),
        (
            "sales_2024-03.csv",
            SALES_HEADER + b"2024-03-01,n,w,1,1\n2024-03-02,n,w,1,abc\n",
            "line 3, column 'amount': 'abc' is not a number",
        ),
        ("sales_2024-03.csv", SALES_HEADER + b"2024-03-01,Z\xfcrich,w,1,1\n", "not UTF-8"),
        ("sales.csv", SALES_HEADER + b"2024-03-01,n,w,1,1\n", "carries no month"),
    ],
)
def test_bad_file_is_rejected_and_moved(
    ingest: Callable[..., str],
    gcs_client: Any,
    gcs_bucket: str,
    db: Engine,
    file_name: str,
    data: bytes,
    reason: str,
) -> None:
    obj = upload(gcs_client, gcs_bucket, f"inbox/sales/{file_name}", data)
    assert ingest(obj) == "rejected"
    row = file_row(db, obj.name)
    assert row.status == "REJECTED"
    assert reason in row.error
    moved = f"rejected/sales/{obj.generation}/{file_name}"
    assert names(gcs_client, gcs_bucket) == [moved]
    assert read(gcs_client, gcs_bucket, moved) == data  # nothing lost
    assert ingest.loader.calls == []  # type: ignore[attr-defined]


def test_good_file_staged_loaded_archived_in_order(
    ingest: Callable[..., str],
    gcs_client: Any,
    gcs_bucket: str,
    db: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = (DATA / "sales_2024-03.csv").read_bytes()
    obj = upload(gcs_client, gcs_bucket, SALES, raw)
    with caplog.at_level(logging.INFO, logger="dagrelay.ingest"):
        assert ingest(obj) == "archived"
    moves = [(r.__dict__["from"], r.__dict__["to"]) for r in caplog.records if "to" in r.__dict__]
    assert moves == [("RECEIVED", "VALIDATED"), ("VALIDATED", "LOADED"), ("LOADED", "ARCHIVED")]
    row = file_row(db, SALES)
    assert (row.status, row.rows_loaded, row.target_table, row.source) == (
        "ARCHIVED",
        4,
        "finance.sales",
        "sales",
    )
    assert row.md5 == obj.resource["md5Hash"]
    assert row.size_bytes == len(raw)
    staged = f"staging/sales/{obj.generation}/sales_2024-03.csv.parquet"
    archived = f"archive/sales/{obj.generation}/sales_2024-03.csv"
    assert names(gcs_client, gcs_bucket) == [archived, staged]
    assert read(gcs_client, gcs_bucket, archived) == raw
    table = pq.read_table(io.BytesIO(read(gcs_client, gcs_bucket, staged)))
    assert [(f.name, str(f.type), f.nullable) for f in table.schema] == [
        ("sale_date", "date32[day]", False),
        ("region", "string", False),
        ("product", "string", True),
        ("quantity", "int64", False),
        ("amount", "double", False),
    ]
    assert table.num_rows == 4
    assert sum(table.column("amount").to_pylist()) == pytest.approx(1250.5)
    assert table.column("product").to_pylist()[-1] is None
    [call] = ingest.loader.calls  # type: ignore[attr-defined]
    assert call["uri"] == f"gs://{gcs_bucket}/{staged}"
    assert call["table"] == "finance.sales"


def test_same_object_notified_twice_is_loaded_once(
    ingest: Callable[..., str],
    gcs_client: Any,
    gcs_bucket: str,
    db: Engine,
) -> None:
    obj = upload(gcs_client, gcs_bucket, SALES, (DATA / "sales_2024-03.csv").read_bytes())
    assert ingest(obj) == "archived"
    assert ingest(obj) == "duplicate: ARCHIVED"
    assert len(ingest.loader.calls) == 1  # type: ignore[attr-defined]
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM file_log")).scalar_one() == 1


def test_duplicates_in_parallel_load_once(
    ingest: Callable[..., str],
    gcs_client: Any,
    gcs_bucket: str,
) -> None:
    obj = upload(gcs_client, gcs_bucket, SALES, (DATA / "sales_2024-03.csv").read_bytes())
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(ingest(obj))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("archived") == 1
    assert len(ingest.loader.calls) == 1  # type: ignore[attr-defined]


def test_failed_load_is_resumed_by_the_redelivery(
    ingest: Callable[..., str],
    gcs_client: Any,
    gcs_bucket: str,
    db: Engine,
) -> None:
    obj = upload(gcs_client, gcs_bucket, SALES, (DATA / "sales_2024-03.csv").read_bytes())
    ingest.loader.fail = RuntimeError("backend error")  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError):
        ingest(obj)
    row = file_row(db, SALES)
    assert (row.status, row.error) == ("VALIDATED", "RuntimeError: backend error")
    ingest.loader.fail = None  # type: ignore[attr-defined]
    assert ingest(obj) == "archived"  # resumed from VALIDATED: no second validation
    assert file_row(db, SALES).error is None
    assert len(ingest.loader.calls) == 1  # type: ignore[attr-defined]


def test_abandoned_row_waits_then_is_resumed_by_the_sweep(
    ingest: Callable[..., str],
    gcs_client: Any,
    gcs_bucket: str,
    db: Engine,
    engine: DagEngine,
    clock: FakeClock,
) -> None:
    """A worker killed after claiming (no error recorded): a duplicate notification leaves the
    row alone while it may still be running; once stale, the sweep takes it over."""
    obj = upload(gcs_client, gcs_bucket, SALES, (DATA / "sales_2024-03.csv").read_bytes())
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO file_log (bucket, name, generation, source, status, received_at,"
                " updated_at) VALUES (:b, :n, :g, 'sales', 'RECEIVED', :t, :t)"
            ),
            {"b": gcs_bucket, "n": SALES, "g": obj.generation, "t": clock()},
        )
    assert ingest(obj, resume_after_s=60) == "in progress: RECEIVED"
    clock.advance(61)
    loader = ingest.loader  # type: ignore[attr-defined]
    done = resume_stale(
        db=db,
        storage_client=gcs_client,
        loader=loader,
        engine=engine,
        sources=SOURCES,
        clock=clock,
        resume_after_s=60,
    )
    assert done == {f"gs://{gcs_bucket}/{SALES}#{obj.generation}": "archived"}
    assert len(loader.calls) == 1


def _batches(db: Engine) -> list[tuple[str, str]]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT pipeline, batch_id FROM batches"))]


@pytest.fixture
def monthly_profit(insert_pipeline: Callable[..., dict[str, int]]) -> None:
    insert_pipeline("monthly_profit", {"calculate_profit": ["load_sales", "load_expenses"]})


@pytest.mark.usefixtures("monthly_profit")
def test_both_sources_of_a_month_start_one_batch(
    ingest: Callable[..., str],
    gcs_client: Any,
    gcs_bucket: str,
    db: Engine,
) -> None:
    sales = upload(gcs_client, gcs_bucket, SALES, (DATA / "sales_2024-03.csv").read_bytes())
    assert ingest(sales) == "archived"
    assert _batches(db) == []  # expenses for 2024-03 not loaded yet
    other = "inbox/expenses/expenses_2024-04.csv"
    april = upload(gcs_client, gcs_bucket, other, (DATA / "expenses_2024-03.csv").read_bytes())
    assert ingest(april) == "archived"
    assert _batches(db) == []  # another month
    data = (DATA / "expenses_2024-03.csv").read_bytes()
    assert ingest(upload(gcs_client, gcs_bucket, EXPENSES, data)) == "archived"
    assert _batches(db) == [("monthly_profit", "2024-03")]
    with db.connect() as conn:
        by = conn.execute(text("SELECT * FROM batches")).one()
    assert "expenses_2024-03.csv" in str(by._mapping)


@pytest.mark.usefixtures("monthly_profit")
@pytest.mark.parametrize("attempt", range(3))
def test_sources_finishing_together_start_exactly_one_batch(
    ingest: Callable[..., str],
    gcs_client: Any,
    gcs_bucket: str,
    db: Engine,
    attempt: int,
) -> None:
    objs = [
        upload(gcs_client, gcs_bucket, SALES, (DATA / "sales_2024-03.csv").read_bytes()),
        upload(gcs_client, gcs_bucket, EXPENSES, (DATA / "expenses_2024-03.csv").read_bytes()),
    ]
    barrier = threading.Barrier(2)
    results: list[str] = []

    def work(obj: ObjectFinalized) -> None:
        barrier.wait()
        results.append(ingest(obj))

    threads = [threading.Thread(target=work, args=(o,)) for o in objs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["archived", "archived"]
    assert _batches(db) == [("monthly_profit", "2024-03")]


def test_notify_publishes_what_gcs_would(
    gcs_client: Any,
    gcs_bucket: str,
    pubsub_emulator: str,
    unique: str,
) -> None:
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient  # noqa: PLC0415

    publisher, subscriber = PublisherClient(), SubscriberClient()
    topic = publisher.topic_path("dagrelay-test", f"events-{unique}")
    sub = subscriber.subscription_path("dagrelay-test", f"sub-{unique}")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=sub, topic=topic)
    gcs_client.bucket(gcs_bucket).blob(SALES).upload_from_string(b"x")
    gcs.notify(gcs_bucket, SALES, "dagrelay-test", f"events-{unique}")
    [received] = subscriber.pull(subscription=sub, max_messages=1, timeout=10).received_messages
    attrs = dict(received.message.attributes)
    blob = gcs_client.bucket(gcs_bucket).get_blob(SALES)
    assert attrs == {
        "notificationConfig": f"projects/_/buckets/{gcs_bucket}/notificationConfigs/1",
        "eventType": "OBJECT_FINALIZE",
        "payloadFormat": "JSON_API_V1",
        "bucketId": gcs_bucket,
        "objectId": SALES,
        "objectGeneration": str(blob.generation),
        "eventTime": attrs["eventTime"],
    }
    envelope = Envelope(base64.b64encode(received.message.data).decode(), attrs)
    message = parse(envelope)
    assert message == ObjectFinalized(gcs_bucket, SALES, blob.generation, message.resource)  # type: ignore[union-attr]
    assert message.resource["md5Hash"] == blob.md5_hash
    assert message.resource["size"] == "1"
    subscriber.close()
