"""Ingestion on the engine against real PostgreSQL and the real storage emulator (BigQuery's jobs
faked: tests/integration/test_ingest_bigquery.py loads into bqemulator): a file is a batch of
``ingest.<source>``; bad, unreadable and foreign objects end REJECTED with their reason; the same
content is loaded once; a corrected file under a loaded name follows its source's on_replace;
the load is deferred and polled; a crash between steps resumes without a second load."""

from __future__ import annotations

import io
import itertools
import threading
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from dagrelay.bounds import MAX_ERROR_CHARS
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.ingest.pipeline import batch_id
from dagrelay.ingest.sources import parse_sources
from dagrelay.local.crashes import CrashInjector, InjectedCrash
from tests.integration.helpers import statuses
from tests.integration.ingest_harness import SOURCES, FakeLoader, Harness

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / "schema" / "pipelines" / "data"
SALES = "inbox/sales/sales_2024-03.csv"
EXPENSES = "inbox/expenses/expenses_2024-03.csv"
SALES_HEADER = b"sale_date,region,product,quantity,amount\n"
STEPS = ["validate", "convert", "load", "archive", "trigger"]


def sales() -> bytes:
    return (DATA / "sales_2024-03.csv").read_bytes()


@pytest.fixture
def h(ingest_harness: Harness) -> Harness:
    return ingest_harness


@pytest.fixture
def loader(ingest_harness: Harness) -> FakeLoader:
    assert isinstance(ingest_harness.loader, FakeLoader)
    return ingest_harness.loader


def task_statuses(h: Harness, obj: Any, source: str = "sales") -> dict[str, str]:
    found = statuses(h.db, batch_id(obj.bucket, obj.name, obj.generation))
    return {name.removeprefix(f"ingest.{source}."): status for name, status in found.items()}


def test_a_good_file_runs_as_an_engine_batch(h: Harness, loader: FakeLoader) -> None:
    obj = h.upload(SALES, sales())
    assert h.ingest(obj) == "received"
    assert task_statuses(h, obj) == dict.fromkeys(STEPS, "SUCCESS")
    batch = batch_id(obj.bucket, obj.name, obj.generation)
    assert h.batches() == [("ingest.sales", batch, "SUCCESS")]
    row = h.file(SALES)
    assert (row["status"], row["rows_loaded"], row["batch_id"]) == ("ARCHIVED", 4, batch)
    assert row["md5"] == obj.resource["md5Hash"]  # computed from the content, as GCS has it
    staged = f"staging/sales/{obj.generation}/sales_2024-03.csv.parquet"
    archived = f"archive/sales/{obj.generation}/sales_2024-03.csv"
    assert h.names() == [archived, staged]
    assert h.read(archived) == sales()
    table = pq.read_table(io.BytesIO(h.read(staged)))
    assert [(f.name, str(f.type), f.nullable) for f in table.schema] == [
        ("sale_date", "date32[day]", False),
        ("region", "string", False),
        ("product", "string", True),
        ("quantity", "int64", False),
        ("amount", "double", False),
    ]
    assert sum(table.column("amount").to_pylist()) == pytest.approx(1250.5)
    [job] = loader.submitted
    assert (job["uri"], job["table"]) == (f"gs://{h.bucket}/{staged}", "finance.sales")


def test_the_load_is_deferred_and_its_poll_concludes(h: Harness, loader: FakeLoader) -> None:
    obj = h.upload(SALES, sales())
    h.ingestor(obj)
    seen: list[tuple[str, RunOutcome]] = []
    while not any(o == RunOutcome.DEFERRED for _, o in seen):
        seen += [h.deliver(m.payload, m) for m in h.publisher.drain("dagrelay-events")]
    assert seen[-1] == ("ingest.sales.load", RunOutcome.DEFERRED)
    assert h.file(SALES)["status"] == "VALIDATED"  # submitted, not waited for
    assert h.file(SALES)["load_job"] == loader.submitted[0]["job_id"]
    later = h.drive()
    assert ("ingest.sales.load", RunOutcome.SUCCESS) in later  # by its poll
    assert h.file(SALES)["status"] == "ARCHIVED"
    assert len(loader.submitted) == 1


@pytest.mark.parametrize(
    ("file_name", "data", "reason"),
    [
        ("sales_2024-03.csv", b"", "file is empty"),
        ("sales_2024-03.csv", SALES_HEADER, "file has a header but no data rows"),
        ("sales_2024-03.csv", b"sale_date,region\n2024-03-01,n\n", "missing required column"),
        (
            "sales_2024-03.csv",
            SALES_HEADER + b"2024-03-01,n,w,1,1\n2024-03-02,n,w,1,abc\n",
            "line 3, column 'amount': 'abc' is not a number",
        ),
        ("sales_2024-03.csv", SALES_HEADER + b"2024-03-01,Z\xfcrich,w,1,1\n", "not UTF-8"),
        ("sales.csv", SALES_HEADER + b"2024-03-01,n,w,1,1\n", "carries no month"),
    ],
)
def test_a_bad_file_is_rejected_kept_and_fails_its_batch(
    h: Harness, loader: FakeLoader, file_name: str, data: bytes, reason: str
) -> None:
    obj = h.upload(f"inbox/sales/{file_name}", data)
    h.ingest(obj)
    row = h.file(obj.name)
    assert row["status"] == "REJECTED"
    assert reason in row["error"]
    moved = f"rejected/sales/{obj.generation}/{file_name}"
    assert h.names() == [moved]
    assert h.read(moved) == data
    found = task_statuses(h, obj)
    assert found["validate"] == "ERROR"  # non-retryable: one attempt
    assert {found[s] for s in STEPS[1:]} == {"UPSTREAM_FAILED"}  # nothing after it ran
    assert loader.submitted == []


def test_a_header_of_a_million_columns_is_rejected_with_a_bounded_error(
    h: Harness, loader: FakeLoader
) -> None:
    header = ",".join(f"c{i}" for i in range(1_000_000)).encode() + b"\n"
    obj = h.upload("inbox/sales/sales_2024-03.csv", header + b"1\n")
    h.ingest(obj)
    row = h.file(obj.name)
    assert row["status"] == "REJECTED"
    assert len(row["error"]) <= MAX_ERROR_CHARS
    assert "characters in all]" in row["error"]  # names the size it was cut from
    assert loader.submitted == []


def test_the_same_content_twice_is_loaded_once(h: Harness, loader: FakeLoader) -> None:
    first = h.upload(SALES, sales())
    h.ingest(first)
    again = h.upload(SALES, sales())  # a new generation, identical content
    other = h.upload("inbox/sales/copy_of_sales_2024-03.csv", sales())  # same md5, new name
    assert again.generation != first.generation
    h.ingest(again)
    h.ingest(other)
    assert len(loader.submitted) == 1
    for obj in (again, other):
        row = h.file(obj.name) if obj is other else _by_generation(h, obj)
        assert row["status"] == "DUPLICATE"
        assert row["duplicate_of"] == _by_generation(h, first)["file_id"]
        assert f"gs://{h.bucket}/{SALES}#{first.generation}" in row["error"]
        assert task_statuses(h, obj) == dict.fromkeys(STEPS, "SUCCESS")  # nothing failed
    archived = [n for n in h.names() if n.startswith("archive/")]
    assert len(archived) == 3  # each upload accounted for, none left in the inbox
    assert not [n for n in h.names() if n.startswith("inbox/")]


def _by_generation(h: Harness, obj: Any) -> dict[str, Any]:
    return next(r for r in _rows(h) if (r["name"], r["generation"]) == (obj.name, obj.generation))


def _rows(h: Harness) -> list[dict[str, Any]]:
    from sqlalchemy import text  # noqa: PLC0415

    with h.db.connect() as conn:
        found = conn.execute(text("SELECT *, status::text AS status FROM file_log"))
        return [dict(r) for r in found.mappings()]


def test_copies_arriving_together_load_once(h: Harness, loader: FakeLoader) -> None:
    objs = [h.upload(f"inbox/sales/copy{i}_2024-03.csv", sales()) for i in range(3)]
    for obj in objs:
        h.ingestor(obj)
    barrier = threading.Barrier(3)
    runs = list(h.publisher.drain("dagrelay-events"))

    def deliver(message: Any) -> None:
        barrier.wait()
        h.deliver(message.payload, message)

    threads = [threading.Thread(target=deliver, args=(m,)) for m in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    h.drive()
    assert sorted(r["status"] for r in _rows(h)) == ["ARCHIVED", "DUPLICATE", "DUPLICATE"]
    assert len(loader.submitted) == 1


def test_a_corrected_file_under_a_loaded_name_is_refused_by_default(
    h: Harness, loader: FakeLoader
) -> None:
    first = h.upload(SALES, sales())
    h.ingest(first)
    corrected = sales().replace(b"450.50", b"460.50")
    assert corrected != sales()
    second = h.upload(SALES, corrected)
    h.ingest(second)
    row = _by_generation(h, second)
    assert row["status"] == "REJECTED"
    assert "already loaded under this name with other content" in row["error"]
    assert "on_replace: refuse" in row["error"]
    assert h.read(f"rejected/sales/{second.generation}/sales_2024-03.csv") == corrected
    assert task_statuses(h, second)["validate"] == "ERROR"
    assert len(loader.submitted) == 1  # the earlier rows stand alone


def test_a_source_that_appends_loads_a_corrected_file_beside_the_first(
    h: Harness, loader: FakeLoader
) -> None:
    raw = {"sources": {"log": {"format": "csv", "target_table": "web.log", "on_replace": "append",
                               "columns": [{"name": "n", "type": "integer"}]}}}  # fmt: skip
    h.reconfigured(sources=parse_sources(raw))
    h.ingest(h.upload("inbox/log/day.csv", b"n\n1\n"))
    h.ingest(h.upload("inbox/log/day.csv", b"n\n2\n"))
    h.ingest(h.upload("inbox/log/day.csv", b"n\n2\n"))  # the same content again: not loaded
    assert sorted(r["status"] for r in _rows(h)) == ["ARCHIVED", "ARCHIVED", "DUPLICATE"]
    assert len(loader.submitted) == 2


def test_another_bucket_is_rejected_and_left_where_it_is(
    h: Harness, gcs_client: Any, loader: FakeLoader
) -> None:
    from dagrelay.local import gcs  # noqa: PLC0415

    foreign = f"{h.bucket}-other"
    gcs.create_buckets(gcs_client, [foreign])
    obj = h.upload(SALES, sales(), bucket=foreign)
    assert h.ingest(obj) == f"rejected: bucket {foreign!r} is not the inbox bucket"
    assert h.ingest(obj) == "duplicate: REJECTED"  # a repeated notification: nothing more
    row = h.file(SALES)
    assert (row["bucket"], row["status"]) == (foreign, "REJECTED")
    assert "not the inbox bucket" in row["error"]
    assert [b.name for b in gcs_client.list_blobs(foreign)] == [SALES]  # not moved
    assert h.batches() == []
    assert loader.submitted == []


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("inbox/sales/../../etc/sales_2024-03.csv", "'..' path segment"),
        ("inbox/sales//sales_2024-03.csv", "empty, '.' or '..' path segment"),
        ("inbox/sales/sales\n2024-03.csv", "control character"),
        ("inbox/nosuchsource/x.csv", "no source for this object"),
    ],
)
def test_an_unsafe_name_is_rejected_without_reading(h: Harness, name: str, reason: str) -> None:
    obj = h.notification(h.bucket, name, generation=1)
    assert h.ingest(obj).startswith("rejected: ")
    row = h.file(name)
    assert row["status"] == "REJECTED"
    assert reason in row["error"]
    assert h.batches() == []


def test_a_missing_object_is_rejected_once_and_not_retried(h: Harness) -> None:
    obj = h.notification(h.bucket, SALES, generation=12345)  # never uploaded
    assert h.ingest(obj) == "received"
    row = h.file(SALES)
    assert row["status"] == "REJECTED"
    assert "does not exist" in row["error"]
    assert task_statuses(h, obj)["validate"] == "ERROR"
    assert h.batches()[0][2] == "FAILED"
    assert h.drive() == []  # the sweep finds nothing more to do with it


class BrokenStore:
    """An object store that times out on every read, as an unreachable GCS would."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def download(self, *args: Any) -> None:
        self.reads += 1
        raise TimeoutError("read timed out")


def test_an_unreadable_object_is_rejected_after_a_bounded_number_of_tries(h: Harness) -> None:
    broken = BrokenStore(h.runtime.store)
    h.reconfigured(store=broken)
    obj = h.upload(SALES, sales())
    h.ingest(obj)
    row = h.file(SALES)
    assert row["status"] == "REJECTED"
    assert "could not be read in 3 tries: read timed out" in row["error"]
    assert broken.reads == 3
    assert task_statuses(h, obj)["validate"] == "ERROR"
    assert h.drive() == []


def test_a_failed_load_job_is_retried_with_a_new_job(h: Harness, loader: FakeLoader) -> None:
    loader.fail_next = "BigQuery job x failed (backendError): try again"
    obj = h.upload(SALES, sales())
    h.ingest(obj)
    assert h.file(SALES)["status"] == "ARCHIVED"
    failed, loaded = loader.submitted
    assert failed["job_id"] != loaded["job_id"]
    assert h.file(SALES)["load_job"] == loaded["job_id"]


@pytest.mark.parametrize("step", ["convert", "load", "archive"])
def test_a_crash_after_a_step_resumes_without_a_second_load(
    h: Harness, engine: DagEngine, loader: FakeLoader, step: str
) -> None:
    """The worker dies after the step's work, before its result is written: the lease
    expires, the sweeper retries the attempt, and the retry finds the work done."""
    engine.hooks = CrashInjector.parse(f"after_handler:ingest.sales.{step}")
    obj = h.upload(SALES, sales())
    h.ingestor(obj)
    with pytest.raises(InjectedCrash):
        h.drive()
    h.drive()  # leases expire as the clock moves; the sweeper retries
    assert task_statuses(h, obj) == dict.fromkeys(STEPS, "SUCCESS")
    assert h.file(SALES)["status"] == "ARCHIVED"
    assert len(loader.submitted) == 1


def test_a_month_complete_starts_one_pipeline_batch(
    h: Harness, insert_pipeline: Any, loader: FakeLoader
) -> None:
    insert_pipeline("monthly_profit", {"calculate_profit": ["load_sales", "load_expenses"]})
    h.ingest(h.upload(SALES, sales()))
    assert [b for b in h.batches() if b[0] == "monthly_profit"] == []
    expenses = (DATA / "expenses_2024-03.csv").read_bytes()
    obj = h.upload(EXPENSES, expenses)
    h.ingest(obj)
    monthly = [b for b in h.batches() if b[0] == "monthly_profit"]
    assert [b[1] for b in monthly] == ["2024-03"]
    with h.db.connect() as conn:
        from sqlalchemy import text  # noqa: PLC0415

        by = conn.execute(
            text("SELECT triggered_by FROM batches WHERE pipeline = 'monthly_profit'")
        ).scalar_one()
    assert by == f"ingest:gs://{h.bucket}/{EXPENSES}#{obj.generation}"


def test_example_sources_have_their_generated_pipelines() -> None:
    from dagrelay.ingest.pipeline import spec  # noqa: PLC0415

    generated = spec(SOURCES["sales"])
    assert [t.name for t in generated.tasks] == [f"ingest.sales.{s}" for s in STEPS]
    assert generated.edges() == [
        (f"ingest.sales.{a}", f"ingest.sales.{b}") for a, b in itertools.pairwise(STEPS)
    ]


def test_a_month_complete_updates_both_assets_and_starts_the_asset_schedule_once(
    h: Harness, insert_pipeline: Any, loader: FakeLoader
) -> None:
    """The month trigger as a declaration: each file's ingestion updates its source's asset
    (bq://<target_table>) for its month; a pipeline waiting for both starts once per month."""
    from dataclasses import replace  # noqa: PLC0415

    from sqlalchemy import text  # noqa: PLC0415

    h.reconfigured(sources={n: replace(s, triggers=()) for n, s in SOURCES.items()})
    insert_pipeline("report", {"report.t": []})
    with h.db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO asset_schedules (pipeline, assets, batch_id_template) VALUES "
                "('report', '{bq://finance.sales,bq://finance.expenses}', '{partition}')"
            )
        )
    h.ingest(h.upload(SALES, sales()))
    assert [b for b in h.batches() if b[0] == "report"] == []
    h.ingest(h.upload(EXPENSES, (DATA / "expenses_2024-03.csv").read_bytes()))
    h.ingest(h.upload(SALES, sales()))  # the same content again: no new rows, no update
    assert [b[1] for b in h.batches() if b[0] == "report"] == ["2024-03"]
    with h.db.connect() as conn:
        events = conn.execute(
            text("SELECT asset, partition_key FROM asset_events ORDER BY asset")
        ).all()
    assert [tuple(e) for e in events] == [
        ("bq://finance.expenses", "2024-03"),
        ("bq://finance.sales", "2024-03"),
    ]
