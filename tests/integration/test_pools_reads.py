"""Queued tasks as status, explain and the dashboard show them: their pool and their place;
`dagrelay pool list` shows slots, in use and queued."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask.testing import FlaskClient
from google.cloud import pubsub_v1
from rich.console import Console
from sqlalchemy import Engine, text
from typer.testing import CliRunner, Result

from dagrelay import cli
from dagrelay.cli.explain import explain_tree
from dagrelay.cli.pool import pool_table
from dagrelay.cli.render import batch_table
from dagrelay.engine.pools import set_pool
from dagrelay.messages import StartBatch
from dagrelay.store import pools, reads
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration.helpers import as_run_task, framework_client, make_engine
from tests.integration.test_dashboard import clear_caches
from tests.integration.test_ops_cli import PROJECT, Topic, _reset

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]


@pytest.fixture
def queued(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    """a, b, c of pipeline p queued in pool bigquery (0 slots), in that order."""
    insert_pipeline("p", {"a": [], "b": [], "c": []})
    with db.begin() as conn:
        conn.execute(text("UPDATE tasks SET pool = 'bigquery'"))
    engine = make_engine(db, publisher, clock)
    set_pool(engine, "bigquery", 0, "the warehouse")
    engine.start_batch(StartBatch("p", "b1"))
    for message in sorted(publisher.drain(), key=lambda m: m.payload["task"]):
        engine.run_task(as_run_task(message))


def rendered(thing: object) -> str:
    console = Console(width=200, record=True)
    console.print(thing)
    return console.export_text()


@pytest.mark.usefixtures("queued")
def test_status_and_explain_show_the_pool_and_the_place(db: Engine) -> None:
    with db.connect() as conn:
        [batch] = reads.read_batches(conn, "b1", "p")
        rows = pools.pools(conn)
    places = {t["task"]: (t["status"], t["pool"], t["ahead"]) for t in batch["tasks"]}
    assert places == {
        "a": ("QUEUED", "bigquery", 0),
        "b": ("QUEUED", "bigquery", 1),
        "c": ("QUEUED", "bigquery", 2),
    }
    assert "waiting: pool bigquery: 2 ahead" in rendered(batch_table(batch))
    queued = [t for t in batch["tasks"] if t["status"] == "QUEUED"]
    assert "b QUEUED pool bigquery: 1 ahead" in rendered(
        explain_tree("p", "b1", batch["status"], batch["root_causes"], queued=queued)
    )
    assert [(p.name, p.slots, p.in_use, p.queued) for p in rows] == [("bigquery", 0, 0, 3)]
    assert "the warehouse" in rendered(pool_table(rows))


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, db_url: str) -> Iterator[FlaskClient]:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.delenv("DAGRELAY_CONFIG", raising=False)
    clear_caches()
    yield framework_client("status", "http")
    clear_caches()


@pytest.mark.usefixtures("queued")
def test_the_dashboard_shows_the_place(client: FlaskClient) -> None:
    html = client.get("/batches/p/b1").get_data(as_text=True)
    assert "pool bigquery: 2 ahead" in html
    assert "QUEUED" in html


@pytest.fixture
def events(pubsub_emulator: str, unique: str) -> Topic:
    """A topic of its own with a pull subscription, as the operator CLI tests make them."""
    publisher = pubsub_v1.PublisherClient()
    name = publisher.create_topic(name=publisher.topic_path(PROJECT, f"pools-{unique}")).name
    with pubsub_v1.SubscriberClient() as subscriber:
        subscription = subscriber.subscription_path(PROJECT, f"pools-{unique}")
        subscriber.create_subscription(name=subscription, topic=name, ack_deadline_seconds=60)
    return Topic(f"pools-{unique}", subscription)


@pytest.fixture
def cli_run(db_url: str) -> Iterator[Callable[..., Result]]:
    def invoke(*args: str, **env: str) -> Result:
        _reset()
        try:
            return CliRunner().invoke(
                cli.app, list(args), env={"DATABASE_URL": db_url, "COLUMNS": "200", **env}
            )
        finally:
            _reset()

    yield invoke
    _reset()


@pytest.mark.usefixtures("queued")
def test_pool_set_and_list_on_the_command_line(
    cli_run: Callable[..., Result], events: Topic
) -> None:
    raised = cli_run("pool", "set", "bigquery", "--slots", "2", **events.env())
    listed = cli_run("pool", "list")
    bad = cli_run("pool", "set", "bigquery", "--slots", "-1", **events.env())

    assert raised.exit_code == 0, raised.output
    assert raised.stdout == "pool bigquery: 2 slots\n"
    # The raise released the first two queued tasks, in order, through Pub/Sub.
    assert sorted(str(getattr(m, "task", None)) for m in events.pull(2)) == ["a", "b"]
    assert "bigquery" in listed.stdout
    assert "the warehouse" in listed.stdout
    assert bad.exit_code == 2
    assert "slots must be between 0 and 100000, got -1" in bad.stderr
