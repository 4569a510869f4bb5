"""Mapped tasks: one instance per item, created set-based; the group decides once for its
children; per-item retries, tolerated failures, empty lists, gs:// references, max_items,
rerun of failed items, versions, and the cost of creating instances."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from rich.console import Console
from sqlalchemy import Engine, event, text

from dagrelay.cli.explain import explain_tree, tolerated_failures
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.maps import READ_CHUNK_BYTES
from dagrelay.engine.sweeper import Sweeper
from dagrelay.errors import BadMessage, PipelineError
from dagrelay.messages import Rerun, StartBatch
from dagrelay.pipelines.apply import apply
from dagrelay.pipelines.export import export_yaml, read_pipeline
from dagrelay.pipelines.spec import load_pipeline
from dagrelay.pipelines.validate import validate as validate_pipeline
from dagrelay.store import reads
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration import map_helpers as mh
from tests.integration.helpers import EVENTS_TOPIC, as_run_task, batch_status, drive, scalar
from tests.integration.test_dashboard import OPENAPI, graph_data, validate
from tests.integration.test_dashboard import client as client  # noqa: PLC0414 - the fixture

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    mh.RUNS.clear()
    mh.CALLS.clear()
    mh.SEEN.clear()


def map_pipeline(
    db: Engine,
    insert_pipeline: InsertPipeline,
    *,
    source: str,
    spec: dict[str, Any] | None = None,
    square_kwargs: dict[str, Any] | None = None,
    **columns: Any,
) -> None:
    """src -> each (mapped over src.items) -> join."""
    insert_pipeline(
        "p",
        {"src": [], "each": ["src"], "join": ["each"]},
        handlers={"src": "python.call", "each": "python.call", "join": "python.call"},
        params={
            "src": source,
            "each": mh.params("square", x="{item}", **(square_kwargs or {})),
            "join": mh.params("join", over="each"),
        },
    )
    mh.set_map(db, "p", "each", spec or {"over": "src.items"}, **columns)


def instances(db: Engine, batch_id: str) -> list[dict[str, Any]]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT tl.map_index, tl.status::text AS status, tl.attempt, tl.item "
                "FROM task_log tl JOIN tasks t USING (task_id) "
                "WHERE tl.batch_id = :b AND t.name = 'each' AND tl.map_index >= 0 "
                "ORDER BY tl.map_index"
            ),
            {"b": batch_id},
        ).mappings()
        return [dict(r) for r in rows]


def row(db: Engine, batch_id: str, task: str) -> dict[str, Any]:
    with db.connect() as conn:
        found = (
            conn.execute(
                text(
                    "SELECT tl.status::text AS status, tl.output, tl.error FROM task_log tl "
                    "JOIN tasks t USING (task_id) "
                    "WHERE tl.batch_id = :b AND t.name = :t AND tl.map_index = -1"
                ),
                {"b": batch_id, "t": task},
            )
            .mappings()
            .one_or_none()
        )
        return dict(found) if found else {}


def start(engine: DagEngine, batch_id: str = "b1") -> None:
    engine.start_batch(StartBatch(pipeline="p", batch_id=batch_id))


def test_map_over_500_items_on_4_workers_with_duplicates(
    db: Engine, engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline
) -> None:
    map_pipeline(db, insert_pipeline, source=mh.params("make_items", count=500))
    start(engine)
    deliveries = mh.run_workers(
        engine, publisher, lambda: batch_status(db, "p", "b1") != "RUNNING", workers=4, copies=2
    )
    assert batch_status(db, "p", "b1") == "SUCCESS"
    assert deliveries >= 2 * 502
    each = mh.runs_by_index("each")
    assert sorted(each) == list(range(500)), "every item ran"
    assert set(each.values()) == {1}, "no item ran twice"
    assert mh.RUNS[("b1", "join", None)] == 1
    assert [o["y"] for o in mh.SEEN[0]] == [i * i for i in range(500)], "outputs in index order"
    assert all(i["status"] == "SUCCESS" and i["attempt"] == 1 for i in instances(db, "b1"))


def test_each_item_retries_on_its_own(
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
) -> None:
    map_pipeline(
        db,
        insert_pipeline,
        source=mh.params("make_items", count=6),
        square_kwargs={"flaky": [1, 4]},
        max_retries=2,
        retry_delay_s=5,
        retry_max_delay_s=5,
    )
    start(engine)
    drive(engine, publisher)
    assert [i["status"] for i in instances(db, "b1")].count("RETRY") == 2
    clock.advance(10)
    engine.outbox.relay(cutoff=clock(), limit=100)
    drive(engine, publisher)
    assert batch_status(db, "p", "b1") == "SUCCESS"
    assert [i["attempt"] for i in instances(db, "b1")] == [1, 2, 1, 1, 2, 1]
    assert (
        scalar(
            db,
            "SELECT count(*) FROM task_attempts a JOIN tasks t USING (task_id) "
            "WHERE t.name = 'each'",
        )
        == 8
    )
    assert mh.RUNS[("b1", "join", None)] == 1


@pytest.mark.parametrize(
    ("tolerated", "failing", "outcome"),
    [
        (2, [1, 3], "SUCCESS"),
        (1, [1, 3], "FAILED"),
        ("20%", [7, 9], "SUCCESS"),
        ("10%", [7, 9], "FAILED"),
    ],
)
def test_tolerated_failures(
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
    tolerated: int | str,
    failing: list[int],
    outcome: str,
) -> None:
    map_pipeline(
        db,
        insert_pipeline,
        source=mh.params("make_items", count=10),
        spec={"over": "src.items", "tolerated_failures": tolerated},
        square_kwargs={"fail": failing},
    )
    start(engine)
    drive(engine, publisher, copies=2, rng=random.Random(7))
    assert batch_status(db, "p", "b1") == outcome
    group = row(db, "b1", "each")
    assert group["error"] == f"2 of 10 items failed ({2 if outcome == 'SUCCESS' else 1} tolerated)"
    if outcome == "SUCCESS":
        assert mh.RUNS[("b1", "join", None)] == 1
        assert [o and o["x"] for o in mh.SEEN[0]] == [
            None if i in failing else i for i in range(10)
        ]
    else:
        assert group["status"] == "ERROR"
        assert row(db, "b1", "join")["status"] == "UPSTREAM_FAILED"


@pytest.mark.parametrize(
    ("tolerated", "failing", "alerted"),
    [
        (2, [1, 3], 0),
        ("30%", [2, 5, 8], 0),
        (1, [1, 3], 1),
        (None, [1, 3, 5, 7], 1),
    ],
)
def test_tolerated_item_failures_are_recorded_not_alerted(
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
    caplog: pytest.LogCaptureFixture,
    tolerated: int | str | None,
    failing: list[int],
    alerted: int,
) -> None:
    """Failures within tolerated_failures raise no alert; the failure that makes the group
    exceed its tolerance raises exactly one (and the items after it none)."""
    spec: dict[str, Any] = {"over": "src.items"}
    if tolerated is not None:
        spec["tolerated_failures"] = tolerated
    map_pipeline(
        db,
        insert_pipeline,
        source=mh.params("make_items", count=10),
        spec=spec,
        square_kwargs={"fail": failing},
    )
    start(engine)
    with caplog.at_level("INFO", logger="dagrelay"):
        drive(engine, publisher, copies=2, rng=random.Random(11))

    alerts = [json.loads(m.data()) for m in publisher.drain("dagrelay-alerts")]
    assert len(alerts) == alerted, alerts
    logged = [r for r in caplog.records if getattr(r, "alert", None) == "task_failed"]
    assert len(logged) == alerted, "the log-based alert follows the alert messages"
    failed = [i for i in instances(db, "b1") if i["status"] == "ERROR"]
    assert [i["map_index"] for i in failed] == failing, "every failed item is recorded"
    errors = scalar(
        db,
        "SELECT count(*) FROM task_log tl JOIN tasks t USING (task_id) "
        "WHERE t.name = 'each' AND tl.map_index >= 0 AND tl.error LIKE '%RuntimeError: item %'",
    )
    assert errors == len(failing)
    assert batch_status(db, "p", "b1") == ("FAILED" if alerted else "SUCCESS")
    if alerted:
        [alert] = alerts
        assert alert["task"] == "each"
        assert "more than the" in alert["error"]
        assert "tolerated" in alert["error"]
    else:
        with db.connect() as conn:
            batch = reads.read_batch(conn, "p", "b1")
        assert batch is not None
        tree = explain_tree(
            "p",
            "b1",
            batch["status"],
            batch["root_causes"],
            tolerated=tolerated_failures(batch["tasks"]),
        )
        console = Console(width=200, record=True)
        console.print(tree)
        shown = console.export_text()
        assert f"each SUCCESS {len(failing)} of 10 items failed" in shown
        assert "recorded, not alerted" in shown


def test_an_empty_list_skips_the_group(
    db: Engine, engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline
) -> None:
    map_pipeline(db, insert_pipeline, source=mh.params("make_items", count=0))
    start(engine)
    drive(engine, publisher)
    assert row(db, "b1", "each")["status"] == "SKIPPED"
    assert row(db, "b1", "join")["status"] == "SKIPPED"  # all_success: a skipped parent skips
    assert instances(db, "b1") == []
    assert batch_status(db, "p", "b1") == "SUCCESS"


def test_more_than_max_items_is_an_error_on_the_task(
    db: Engine, engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline
) -> None:
    map_pipeline(
        db,
        insert_pipeline,
        source=mh.params("make_items", count=11),
        spec={"over": "src.items", "max_items": 10},
    )
    start(engine)
    drive(engine, publisher)
    group = row(db, "b1", "each")
    assert group["status"] == "ERROR"
    assert group["error"] == "map.over 'src.items' has 11 items, more than max_items (10)"
    assert instances(db, "b1") == []
    assert row(db, "b1", "join")["status"] == "UPSTREAM_FAILED"
    assert batch_status(db, "p", "b1") == "FAILED"
    alerts = [json.loads(m.data()) for m in publisher.drain("dagrelay-alerts")]
    assert [a["task"] for a in alerts] == ["each"]


def test_not_a_list_is_an_error_naming_it(
    db: Engine, engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline
) -> None:
    map_pipeline(db, insert_pipeline, source=mh.params("make_items", count=3, key="other"))
    start(engine)
    drive(engine, publisher)
    assert row(db, "b1", "each")["error"] == (
        "map.over 'src.items': the parent's output has no such key"
    )


def test_item_keys_resolve_in_params(
    db: Engine, engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline
) -> None:
    map_pipeline(db, insert_pipeline, source=mh.params("make_objects", count=3))
    with db.begin() as conn:
        conn.execute(
            text("UPDATE tasks SET params = CAST(:p AS jsonb) WHERE name = 'each'"),
            {"p": mh.params("square", x="{item.n}")},
        )
    start(engine)
    drive(engine, publisher)
    assert [o["y"] for o in mh.SEEN[0]] == [0, 1, 4]
    assert mh.SEEN[0][2]["item"] == {"n": 2, "name": "row-2"}


def test_rerun_failed_items_only(
    db: Engine, engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline
) -> None:
    map_pipeline(
        db,
        insert_pipeline,
        source=mh.params("make_items", count=8),
        square_kwargs={"flaky": [2, 5]},  # fail once: the rerun succeeds
    )
    start(engine)
    drive(engine, publisher)
    assert batch_status(db, "p", "b1") == "FAILED"
    assert row(db, "b1", "join")["status"] == "UPSTREAM_FAILED"
    rerun = Rerun(batch_id="b1", task="each", pipeline="p", failed_items=True)
    assert engine.rerun(rerun) == 2  # the rerun message's path (the CLI's --failed-items)
    drive(engine, publisher)
    assert batch_status(db, "p", "b1") == "SUCCESS"
    each = {k[2]: n for k, n in mh.CALLS.items() if k[1] == "each"}
    assert each == {i: 2 if i in (2, 5) else 1 for i in range(8)}, "only failed items ran again"
    assert mh.RUNS[("b1", "join", None)] == 1
    assert [o["y"] for o in mh.SEEN[0]] == [i * i for i in range(8)]
    attempts = scalar(
        db,
        "SELECT count(*) FROM task_attempts a JOIN tasks t USING (task_id) WHERE t.name = 'each'",
    )
    assert attempts == 10, "the failed attempts stay in the history"
    with pytest.raises(BadMessage, match="no failed items"):
        engine.rerun_failed_items("b1", "each", "p")


def test_a_version_change_mid_batch_does_not_change_the_map(
    db: Engine, engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline
) -> None:
    map_pipeline(
        db,
        insert_pipeline,
        source=mh.params("make_items", count=5),
        spec={"over": "src.items", "max_items": 10},
    )
    start(engine)
    mh.set_map(db, "p", "each", {"over": "src.items", "max_items": 2})  # b2 gets the new map
    drive(engine, publisher)
    assert batch_status(db, "p", "b1") == "SUCCESS"
    assert len(instances(db, "b1")) == 5
    start(engine, "b2")
    drive(engine, publisher)
    assert row(db, "b2", "each")["status"] == "ERROR"


def test_instances_cost_a_constant_number_of_statements(
    db: Engine, engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline
) -> None:
    """The completion that creates 10 instances runs as many statements as the one creating
    1,000."""
    map_pipeline(
        db,
        insert_pipeline,
        source=mh.params("make_items", count="{count}"),
        spec={"over": "src.items", "max_items": 1000},
    )
    counts = {}
    for count in (10, 1000):
        batch = f"b{count}"
        engine.start_batch(StartBatch(pipeline="p", batch_id=batch, params={"count": count}))
        [source] = publisher.drain(EVENTS_TOPIC)
        statements: list[str] = []

        def count_statement(*args: Any, seen: list[str] = statements) -> None:
            seen.append(args[2])

        event.listen(db, "before_cursor_execute", count_statement)
        try:
            engine.run_task(as_run_task(source))
        finally:
            event.remove(db, "before_cursor_execute", count_statement)
        assert len(publisher.drain(EVENTS_TOPIC)) == count
        assert len(instances(db, batch)) == count
        counts[count] = len(statements)
    assert counts[10] == counts[1000], counts


def test_items_by_gs_reference_on_the_storage_emulator(
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
    gcs_client: Any,
    gcs_bucket: str,
) -> None:
    lines = "\n".join(json.dumps({"n": i, "name": f"row-{i}"}) for i in range(300)) + "\n"
    gcs_client.bucket(gcs_bucket).blob("items.jsonl").upload_from_string(lines)
    map_pipeline(
        db,
        insert_pipeline,
        source=mh.params("reference", uri=f"gs://{gcs_bucket}/items.jsonl"),
        spec={"over": "src.items", "max_items": 300},
    )
    with db.begin() as conn:
        conn.execute(
            text("UPDATE tasks SET params = CAST(:p AS jsonb) WHERE name = 'each'"),
            {"p": mh.params("square", x="{item.n}")},
        )
    start(engine)
    missing = StartBatch(pipeline="p", batch_id="b2", params={})
    drive(engine, publisher, copies=2, rng=random.Random(3))
    assert batch_status(db, "p", "b1") == "SUCCESS"
    assert [o["y"] for o in mh.SEEN[0]] == [i * i for i in range(300)]
    assert instances(db, "b1")[299]["item"] == {"n": 299, "name": "row-299"}
    gcs_client.bucket(gcs_bucket).blob("items.jsonl").delete()
    engine.start_batch(missing)
    drive(engine, publisher)
    error = row(db, "b2", "each")["error"]
    assert error.startswith(f"map.over 'src.items': cannot read gs://{gcs_bucket}/items.jsonl: ")


def test_a_gs_list_longer_than_max_items_is_refused_after_reading_past_the_limit(
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
    gcs_client: Any,
    gcs_bucket: str,
) -> None:
    """Streamed from the storage emulator in chunks; the error names the limit and the size."""
    lines = "".join(json.dumps({"n": i, "pad": "p" * 200}) + "\n" for i in range(20_000))
    gcs_client.bucket(gcs_bucket).blob("many.jsonl").upload_from_string(lines)
    map_pipeline(
        db,
        insert_pipeline,
        source=mh.params("reference", uri=f"gs://{gcs_bucket}/many.jsonl"),
        spec={"over": "src.items", "max_items": 100},
    )
    start(engine)
    drive(engine, publisher)
    assert instances(db, "b1") == []
    assert row(db, "b1", "each")["status"] == "ERROR"
    assert row(db, "b1", "each")["error"] == (
        f"map.over 'src.items': gs://{gcs_bucket}/many.jsonl has more than max_items (100) "
        f"items: reading stopped at item 101 (line 101, {READ_CHUNK_BYTES:,} of {len(lines):,} "
        "bytes read)"  # one chunk of the 4.5 MB object
    )


def test_dashboard_shows_the_group_counts_and_its_instances(
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
    client: FlaskClient,
) -> None:
    map_pipeline(
        db,
        insert_pipeline,
        source=mh.params("make_items", count=4),
        spec={"over": "src.items", "tolerated_failures": 1},
        square_kwargs={"fail": [2]},
    )
    start(engine)
    drive(engine, publisher)
    detail = client.get("/api/batches/p/b1/tasks/each").get_json()
    operation = OPENAPI["paths"]["/api/batches/{pipeline}/{batch_id}/tasks/{task}"]
    validate(operation["get"]["responses"]["200"]["content"]["application/json"]["schema"], detail)
    assert detail["items"]["group"] == {
        "task": "each",
        "total": 4,
        "succeeded": 3,
        "failed": 1,
        "running": 0,
    }
    statuses = [i["status"] for i in detail["items"]["instances"]]
    assert statuses == ["SUCCESS", "SUCCESS", "ERROR", "SUCCESS"]
    page = client.get("/batches/p/b1/tasks/each").get_data(as_text=True)
    assert "4 / 4 done, 1 failed, 0 running" in page
    batch_page = client.get("/batches/p/b1").get_data(as_text=True)
    assert "4 / 4 done, 1 failed, 0 running" in batch_page
    drawn = graph_data(batch_page)  # the graph draws the group as one node with its counts
    items = dict(zip(drawn["names"], drawn["items"], strict=True))
    assert items == {
        "src": None,
        "each": {"total": 4, "done": 4, "failed": 1, "running": 0},
        "join": None,
    }


MAPPED_YAML = """
pipeline: files
tasks:
  - name: list_files
    handler: python.noop
  - name: load
    handler: python.noop
    parents: [list_files]
    map: {over: list_files.files, max_items: 50, tolerated_failures: "10%"}
"""


def test_a_pipeline_file_declares_map_and_exports_it(db: Engine, tmp_path: Path) -> None:
    path = tmp_path / "files.yaml"
    path.write_text(MAPPED_YAML)
    spec = load_pipeline(path)
    validate_pipeline(spec, ["python.noop"])
    with db.begin() as conn:
        apply(conn, spec, now=datetime(2024, 3, 1, tzinfo=UTC))
    with db.connect() as conn:
        exported = export_yaml(read_pipeline(conn, "files"))
    assert "map:" in exported
    assert "over: list_files.files" in exported
    bad = tmp_path / "bad.yaml"
    bad.write_text(MAPPED_YAML.replace("over: list_files.files", "over: elsewhere.files"))
    with pytest.raises(PipelineError, match=r"map\.over 'elsewhere\.files' names 'elsewhere'"):
        validate_pipeline(load_pipeline(bad), ["python.noop"])
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(MAPPED_YAML.replace('"10%"', '"ten"'))
    with pytest.raises(PipelineError, match="tolerated_failures"):
        load_pipeline(wrong)


def test_lost_instance_messages_and_an_expired_lease_are_repaired_per_item(
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
) -> None:
    """The sweeper requeues an instance by its index, and concludes an instance whose worker
    died (its lease expired) as that instance's failed attempt, retried on its own."""
    map_pipeline(
        db,
        insert_pipeline,
        source=mh.params("make_items", count=5),
        max_retries=1,
        retry_delay_s=1,
        retry_max_delay_s=1,
    )
    start(engine)
    [source] = publisher.drain(EVENTS_TOPIC)
    engine.run_task(as_run_task(source))
    lost = [as_run_task(m) for m in publisher.drain(EVENTS_TOPIC)]
    assert sorted(m.map_index or 0 for m in lost) == [0, 1, 2, 3, 4]
    with db.begin() as conn:  # instance 3's worker claimed it and died
        conn.execute(
            text(
                "UPDATE task_log SET status = 'PROCESSING', attempt = 1, "
                "lease_expires_at = :at WHERE batch_id = 'b1' AND map_index = 3"
            ),
            {"at": clock()},
        )
    clock.advance(3600)
    Sweeper(engine).sweep(older_than_s=60)
    clock.advance(60)
    Sweeper(engine).sweep(older_than_s=60)
    drive(engine, publisher, copies=2, rng=random.Random(5))
    assert batch_status(db, "p", "b1") == "SUCCESS"
    each = mh.runs_by_index("each")
    assert each == dict.fromkeys(range(5), 1)
    assert [i["attempt"] for i in instances(db, "b1")] == [1, 1, 1, 2, 1]
    assert mh.RUNS[("b1", "join", None)] == 1


def test_a_batch_cannot_start_at_a_mapped_task(
    db: Engine, engine: DagEngine, insert_pipeline: InsertPipeline
) -> None:
    map_pipeline(db, insert_pipeline, source=mh.params("make_items", count=2))
    with pytest.raises(BadMessage, match="start_task 'each' is mapped"):
        engine.start_batch(StartBatch(pipeline="p", batch_id="b1", start_task="each"))
    assert scalar(db, "SELECT count(*) FROM batches") == 0


def test_rerun_of_a_mapped_task_maps_again(
    db: Engine, engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline
) -> None:
    map_pipeline(db, insert_pipeline, source=mh.params("make_items", count=3))
    start(engine)
    drive(engine, publisher)
    assert engine.rerun(Rerun(batch_id="b1", task="each", pipeline="p", downstream=True)) == 2
    drive(engine, publisher)
    assert batch_status(db, "p", "b1") == "SUCCESS"
    each = mh.runs_by_index("each")
    assert each == dict.fromkeys(range(3), 2)
    assert mh.RUNS[("b1", "join", None)] == 2
    assert len(instances(db, "b1")) == 3
