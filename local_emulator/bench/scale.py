"""A thousand tasks at once on a small database: ``python -m local_emulator.bench.scale``.

K router instances (functions-framework processes, ``THREADS`` = request concurrency C, the
deployed pool: ``db_pool_size`` 2 + ``db_max_overflow`` 1) behind the Pub/Sub emulator, fed by
``bench.fanout`` (push to K instances of concurrency C), connecting as a role of their own
limited with ``ALTER ROLE ... CONNECTION LIMIT 25`` (db-f1-micro's max_connections). Reports:
1. 1,000 tasks that each wait 5 s (``python.sleep``: no connection held while it sleeps) —
   wall time, peak tasks in flight (from the rows), peak connections of the role (sampled),
   connection errors (the routers' logs, failed pushes), tasks lost or run twice;
2. no-op throughput at K = 1, 2, 4, 8: completions per second (first claim to last
   completion) and the database's statements and transactions per completion.
Everything it starts (emulator, routers, role, database) it stops or drops.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from google.cloud import pubsub_v1
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine, make_url, text

from dagrelay import capacity
from dagrelay.local import infra, processes
from dagrelay.local.processes import ManagedProcess, wait_for
from dagrelay.store import migrate
from local_emulator.bench.db import NAME_SQL, server_url
from local_emulator.bench.engine import BenchError
from local_emulator.bench.fanout import PushFanout
from local_emulator.bench.scale_router import STATEMENTS_DIR_ENV

PROJECT = "dagrelay-scale"
TOPIC = "dagrelay-events"
SUBSCRIPTION = "scale-router"
CONNECTION_LIMIT = 25  # db-f1-micro
ROUTER_SOURCE = Path(__file__).resolve().with_name("scale_router.py")
CONNECTION_ERRORS = ("too many connections", "errors.PoolExhausted:", "remaining connection slots")


@dataclass(frozen=True)
class Sizes:
    instances: int = capacity.ROUTER_INSTANCES
    concurrency: int = capacity.REQUEST_CONCURRENCY
    waiting_tasks: int = 1000
    sleep_s: float = 5.0
    noop_tasks: int = 1000
    throughput_instances: tuple[int, ...] = (1, 2, 4, 8)


QUICK = Sizes(waiting_tasks=300, noop_tasks=300, throughput_instances=(1, 4))


# -- the database: a role limited like the smallest tier ------------------------------------


@contextmanager
def limited_database() -> Iterator[tuple[str, str, Engine]]:
    """(the routers' URL, their role, an admin engine on the database): a role with
    CONNECTION LIMIT 25 that owns a new database migrated by it; both dropped on exit."""
    suffix = uuid.uuid4().hex[:8]
    role, name = f"dagrelay_scale_{suffix}", f"dagrelay_bench_scale_{suffix}"
    server = make_url(server_url())
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    url = server.set(database=name, username=role, password=None)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT {CONNECTION_LIMIT}'))
            conn.execute(text(f'CREATE DATABASE "{name}" OWNER "{role}"'))
        engine = create_engine(url, pool_size=1)
        try:
            migrate.upgrade(engine)
        finally:
            engine.dispose()
        watcher = create_engine(server.set(database=name), pool_size=2)
        try:
            yield url.render_as_string(hide_password=False), role, watcher
        finally:
            watcher.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


class ConnectionSampler:
    """The role's sessions (pg_stat_activity), every 20 ms, from an admin connection."""

    def __init__(self, db: Engine, role: str) -> None:
        self.db, self.role = db, role
        self.peak = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="connections")

    def __enter__(self) -> ConnectionSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        query = text("SELECT count(*) FROM pg_stat_activity WHERE usename = :r")
        with self.db.connect() as conn:
            while not self.stopping.is_set():
                self.peak = max(self.peak, int(conn.execute(query, {"r": self.role}).scalar_one()))
                conn.commit()
                self.stopping.wait(0.02)


# -- the routers -----------------------------------------------------------------------------


@dataclass
class Fleet:
    routers: list[ManagedProcess]
    fanout: PushFanout
    statements_dir: Path

    def statements(self) -> int:
        return sum(int(p.read_text() or 0) for p in self.statements_dir.glob("[0-9]*"))

    def errors(self) -> dict[str, int]:
        """Connection errors in the routers' logs, by kind, and pushes not answered 2xx."""
        found = dict.fromkeys(CONNECTION_ERRORS, 0)
        for router in self.routers:
            if router.log_path.exists():
                log = router.log_path.read_text(errors="replace")
                for marker in CONNECTION_ERRORS:
                    found[marker] += log.count(marker)
        failed = {f"push {k}": n for k, n in self.fanout.stats.statuses.items() if k[0] != "2"}
        return {k: n for k, n in (found | failed).items() if n}

    def capacity_line(self) -> str:
        for line in self.routers[0].log_path.read_text(errors="replace").splitlines():
            if "capacity model" in line:
                try:
                    return str(json.loads(line).get("message", line))
                except json.JSONDecodeError:
                    return line
        return "(no capacity line logged)"


@contextmanager
def fleet(
    url: str, emulator_host: str, instances: int, concurrency: int, workdir: Path
) -> Iterator[Fleet]:
    statements_dir = workdir / f"statements-{instances}-{uuid.uuid4().hex[:4]}"
    statements_dir.mkdir()
    env = {
        **os.environ,
        "PUBSUB_EMULATOR_HOST": emulator_host,
        "DATABASE_URL": url,
        "DAGRELAY_PROJECT_ID": PROJECT,
        "DAGRELAY_EVENTS_TOPIC": TOPIC,
        "DAGRELAY_DB_POOL_SIZE": str(capacity.POOL_SIZE),
        "DAGRELAY_DB_MAX_OVERFLOW": str(capacity.MAX_OVERFLOW),
        "DAGRELAY_REQUEST_CONCURRENCY": str(concurrency),
        "DAGRELAY_ROUTER_MAX_INSTANCES": str(instances),
        # The role's limit is the whole budget: no reserved slots, nobody else.
        "DAGRELAY_DB_MAX_CONNECTIONS": str(CONNECTION_LIMIT + capacity.RESERVED),
        "DAGRELAY_DB_OTHER_CONNECTIONS": "0",
        "THREADS": str(concurrency),
        "PYTHONUNBUFFERED": "1",
        STATEMENTS_DIR_ENV: str(statements_dir),
    }
    routers: list[ManagedProcess] = []
    fanout: PushFanout | None = None
    try:
        routers.extend(
            processes.start_router(processes.free_port(), env, workdir, source=ROUTER_SOURCE)
            for _ in range(instances)
        )
        endpoints = [_url_of(router) for router in routers]
        subscription = pubsub_v1.SubscriberClient.subscription_path(PROJECT, SUBSCRIPTION)
        fanout = PushFanout(
            subscription, endpoints, concurrency, f"/projects/{PROJECT}/topics/{TOPIC}"
        ).start()
        yield Fleet(routers, fanout, statements_dir)
    finally:
        if fanout is not None:
            fanout.stop()
        for router in routers:
            router.stop()


def _url_of(router: ManagedProcess) -> str:
    # start_router's log is named <target>-<port>.log
    return f"http://127.0.0.1:{router.log_path.stem.rsplit('-', 1)[1]}"


# -- batches ---------------------------------------------------------------------------------


def insert_independent(db: Engine, pipeline: str, n: int, handler: str, params: str) -> None:
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tasks (name, pipeline, handler, params) "
                f"SELECT {NAME_SQL.format(n='g')}, :pipeline, :handler, CAST(:params AS jsonb) "
                "FROM generate_series(1, :n) g"
            ),
            {"pipeline": pipeline, "n": n, "handler": handler, "params": params},
        )


def run_batch(db: Engine, crew: Fleet, pipeline: str, batch_id: str, timeout_s: float) -> None:
    client = pubsub_v1.PublisherClient()
    body = {"action": "start_batch", "pipeline": pipeline, "batch_id": batch_id}
    topic = client.topic_path(PROJECT, TOPIC)
    client.publish(topic, json.dumps(body).encode(), action="start_batch").result(timeout=30)

    def ended() -> bool:
        for router in crew.routers:
            if not router.alive():
                raise BenchError(f"a router exited:\n{router.log_tail()}")
        with db.connect() as conn:
            status = conn.execute(
                text("SELECT status::text FROM batches WHERE pipeline = :p AND batch_id = :b"),
                {"p": pipeline, "b": batch_id},
            ).scalar()
        return status not in (None, "RUNNING")

    wait_for(ended, timeout_s, f"batch {pipeline}/{batch_id}", poll_s=0.1)


def batch_facts(db: Engine, pipeline: str, batch_id: str) -> dict[str, Any]:
    """Wall time, first claim to last completion, tasks by status, attempts, peak running."""
    with db.connect() as conn:
        row = conn.execute(
            text(
                "SELECT b.status::text, EXTRACT(EPOCH FROM b.finished_at - b.created_at), "
                "EXTRACT(EPOCH FROM max(tl.finished_at) - min(tl.started_at)), "
                "count(*) FILTER (WHERE tl.status = 'SUCCESS'), count(*), sum(tl.attempt), "
                "(SELECT count(*) FROM task_attempts a JOIN task_log l USING (log_id) "
                "WHERE l.pipeline = :p AND l.batch_id = :b) "
                "FROM batches b JOIN task_log tl USING (pipeline, batch_id) "
                "WHERE b.pipeline = :p AND b.batch_id = :b GROUP BY b.batch_id, b.status, "
                "b.finished_at, b.created_at"
            ),
            {"p": pipeline, "b": batch_id},
        ).one()
        peak = conn.execute(
            text(
                "SELECT coalesce(max(running), 0) FROM (SELECT sum(delta) OVER (ORDER BY at, "
                "delta) AS running FROM (SELECT started_at AS at, 1 AS delta FROM task_log "
                "WHERE pipeline = :p AND batch_id = :b UNION ALL SELECT finished_at, -1 FROM "
                "task_log WHERE pipeline = :p AND batch_id = :b) e) r"
            ),
            {"p": pipeline, "b": batch_id},
        ).scalar_one()
    status, wall, active, succeeded, rows, attempts, attempt_rows = row
    return {
        "status": status,
        "wall_s": round(float(wall), 2),
        "active_s": round(float(active), 3),
        "succeeded": int(succeeded),
        "rows": int(rows),
        "attempts": int(attempts),
        "attempt_rows": int(attempt_rows),
        "peak_in_flight": int(peak),
    }


def transactions(db: Engine) -> int:
    with db.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                    "WHERE datname = current_database()"
                )
            ).scalar_one()
        )


# -- the two measurements --------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    url: str  # the routers' (the limited role's)
    role: str
    db: Engine  # an admin engine on the same database
    emulator: str  # host:port
    workdir: Path


def waiting(setup: Setup, sizes: Sizes) -> dict[str, Any]:
    url, role, db, emulator, workdir = (
        setup.url,
        setup.role,
        setup.db,
        setup.emulator,
        setup.workdir,
    )
    params = json.dumps({"seconds": sizes.sleep_s})
    insert_independent(db, "wait", sizes.waiting_tasks, "python.sleep", params)
    insert_independent(db, "warm", 2 * sizes.instances, "python.noop", "{}")
    with fleet(url, emulator, sizes.instances, sizes.concurrency, workdir) as crew:
        run_batch(db, crew, "warm", "w1", 120)
        with ConnectionSampler(db, role) as sampler:
            run_batch(db, crew, "wait", "b1", 120 + sizes.waiting_tasks * sizes.sleep_s / 50)
        facts = batch_facts(db, "wait", "b1")
        facts |= {
            "tasks": sizes.waiting_tasks,
            "instances": sizes.instances,
            "concurrency": sizes.concurrency,
            "peak_connections": sampler.peak,
            "peak_requests": crew.fanout.stats.peak_in_flight,
            "errors": crew.errors(),
            "capacity_line": crew.capacity_line(),
        }
    facts["connection_errors"] = sum(facts["errors"].values())
    facts["lost"] = facts["tasks"] - facts["succeeded"]
    facts["doubled"] = facts["attempt_rows"] - facts["succeeded"]
    return facts


def throughput(setup: Setup, sizes: Sizes, instances: int) -> dict[str, Any]:
    url, role, db, emulator, workdir = (
        setup.url,
        setup.role,
        setup.db,
        setup.emulator,
        setup.workdir,
    )
    pipeline, warm = f"noop{instances}", f"warm{instances}"
    insert_independent(db, pipeline, sizes.noop_tasks, "python.noop", "{}")
    insert_independent(db, warm, 2 * instances, "python.noop", "{}")
    with fleet(url, emulator, instances, sizes.concurrency, workdir) as crew:
        run_batch(db, crew, warm, "w1", 120)
        time.sleep(1.2)  # the statement files are rewritten every 0.5 s
        statements_before, xacts_before = crew.statements(), transactions(db)
        with ConnectionSampler(db, role) as sampler:
            run_batch(db, crew, pipeline, "b1", 300)
        time.sleep(1.2)
        statements, xacts = crew.statements(), transactions(db)
        facts = batch_facts(db, pipeline, "b1")
        errors = crew.errors()
    n = sizes.noop_tasks
    return {
        "connection_errors": sum(errors.values()),
        "instances": instances,
        "completions_per_s": round(n / facts["active_s"], 1),
        "wall_s": facts["wall_s"],
        "statements_per_completion": round((statements - statements_before) / n, 2),
        # pg_stat_database's counters arrive late (stats flush): an estimate
        "transactions_per_completion": round((xacts - xacts_before) / n, 2),
        "peak_connections": sampler.peak,
        "errors": errors,
        "lost": n - facts["succeeded"],
        "doubled": facts["attempt_rows"] - facts["succeeded"],
    }


def measure(console: Console, sizes: Sizes) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="dagrelay-scale-") as tmp,
        limited_database() as (url, role, db),
    ):
        port = processes.free_port()
        emulator = processes.start_pubsub_emulator(port, PROJECT, Path(tmp))
        setup = Setup(url, role, db, f"127.0.0.1:{port}", Path(tmp))
        previous = os.environ.get("PUBSUB_EMULATOR_HOST")
        os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{port}"
        try:
            infra.ensure_subscription(PROJECT, TOPIC, SUBSCRIPTION)
            started = time.monotonic()
            with console.status("1. waiting tasks"):
                results["waiting"] = waiting(setup, sizes)
            console.print(f"1. waiting tasks: {time.monotonic() - started:.1f}s")
            results["throughput"] = []
            for k in sizes.throughput_instances:
                started = time.monotonic()
                with console.status(f"2. no-op throughput, K = {k}"):
                    results["throughput"].append(throughput(setup, sizes, k))
                console.print(f"2. no-op throughput, K = {k}: {time.monotonic() - started:.1f}s")
        finally:
            emulator.stop()
            if previous is None:
                os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = previous
    return results


def verdicts(results: dict[str, Any]) -> list[tuple[str, bool]]:
    w = results["waiting"]
    runs = results["throughput"]
    peak = max(r["peak_connections"] for r in [w, *runs])
    return [
        (f"waiting tasks finish in <= 20 s ({w['wall_s']} s)", w["wall_s"] <= 20),
        (f">= 250 in flight at once ({w['peak_in_flight']})", w["peak_in_flight"] >= 250),
        (
            f"<= {CONNECTION_LIMIT} connections (peak {peak})",
            all(r["peak_connections"] <= CONNECTION_LIMIT for r in [w, *runs]),
        ),
        ("no connection error", all(r["connection_errors"] == 0 for r in [w, *runs])),
        ("no task lost or doubled", all(r["lost"] == r["doubled"] == 0 for r in [w, *runs])),
    ]


def table(results: dict[str, Any]) -> Table:
    w = results["waiting"]
    out = Table(title="scale: a role limited to 25 connections")
    out.add_column("measure")
    out.add_column("value", justify="right")
    rows = [
        (
            f"{w['tasks']} tasks x {w['instances']} routers x {w['concurrency']} requests: wall",
            f"{w['wall_s']} s",
        ),
        ("  peak tasks in flight (rows)", str(w["peak_in_flight"])),
        ("  peak push requests in flight", str(w["peak_requests"])),
        ("  peak connections of the role", str(w["peak_connections"])),
        ("  connection errors", f"{w['connection_errors']} {w['errors'] or ''}"),
        ("  tasks lost / doubled", f"{w['lost']} / {w['doubled']}"),
    ]
    rows.extend(
        (
            f"no-op, K = {r['instances']}: completions/s",
            (
                f"{r['completions_per_s']} (statements {r['statements_per_completion']}, "
                f"transactions ~{r['transactions_per_completion']} per completion; "
                f"peak {r['peak_connections']} connections, {r['connection_errors']} errors "
                f"{r['errors'] or ''}, "
                f"{r['lost']}/{r['doubled']} lost/doubled)"
            ),
        )
        for r in results["throughput"]
    )
    for row in rows:
        out.add_row(*row)
    return out


app = typer.Typer(add_completion=False)


@app.command()
def main(
    quick: bool = typer.Option(False, "--quick", help="300 tasks, K = 1 and 4 only."),
    instances: int = typer.Option(capacity.ROUTER_INSTANCES, help="K for the waiting tasks."),
    concurrency: int = typer.Option(capacity.REQUEST_CONCURRENCY, help="C of each router."),
    out: str = typer.Option("bench-scale.json", "--out", help="Where to write the JSON."),
) -> None:
    """A thousand waiting tasks, and no-op throughput at K = 1, 2, 4, 8, on 25 connections."""
    base = QUICK if quick else Sizes()
    sizes = Sizes(
        instances=instances,
        concurrency=concurrency,
        waiting_tasks=base.waiting_tasks,
        sleep_s=base.sleep_s,
        noop_tasks=base.noop_tasks,
        throughput_instances=base.throughput_instances,
    )
    console = Console(soft_wrap=True)
    results = measure(console, sizes)
    results["sizes"] = sizes.__dict__
    checks = verdicts(results)
    results["targets"] = dict(checks)
    Path(out).write_text(json.dumps(results, indent=2) + "\n")
    console.print(table(results))
    console.print(f"router at start: {results['waiting']['capacity_line']}")
    for what, ok in checks:
        console.print(f"{'PASS' if ok else 'FAIL'}  {what}")
    raise typer.Exit(0 if all(ok for _, ok in checks) else 1)


if __name__ == "__main__":
    app()
