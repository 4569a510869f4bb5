"""Benchmarks on the local stack (emulator + router under functions-framework): hop latency of
a chain with its transport floor measured in the same run, and the wall time of a wide batch
with pull workers. Each stack gets its own emulator and throwaway database; both are stopped."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.types import BatchSettings
from sqlalchemy import Engine, create_engine, text

from dagrelay.local import infra
from dagrelay.local.processes import wait_for
from dagrelay.local.stack import Stack, StackConfig, StackInfo
from local_emulator.bench.db import CHAIN, WIDE, batch_state, insert_pipeline, task_name
from local_emulator.bench.engine import BenchError

FLOOR_TOPIC = "bench-floor"
DELIVERY_TIMEOUT_S = 30.0


@contextmanager
def running_stack(url: str, workers: int, sweep_interval_s: float) -> Iterator[Stack]:
    """A stack of its own (emulator included) on ``url``; stopped, logs removed, environment
    restored on exit."""
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    with tempfile.TemporaryDirectory(prefix="dagrelay-bench-") as workdir:
        config = StackConfig(
            database_url=url,
            workers=workers,
            sweep_interval_s=sweep_interval_s,
            workdir=Path(workdir),
        )
        stack = Stack(config)
        try:
            stack.start()
            yield stack
        finally:
            _signal_workers(stack)
            stack.stop()
            if previous is None:
                os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = previous


def _signal_workers(stack: Stack) -> None:
    """SIGTERM every pull worker of this stack at once: each finishes its current pull (up to
    5 s) before exiting, so stopping them one by one (Stack.stop) would add those up."""
    for proc in stack.processes:
        if proc.name.startswith("worker-"):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)


def publish_start(info: StackInfo, pipeline: str, batch_id: str) -> None:
    client = pubsub_v1.PublisherClient()
    body = {"action": "start_batch", "pipeline": pipeline, "batch_id": batch_id}
    topic = client.topic_path(info.project_id, info.events_topic)
    client.publish(topic, json.dumps(body).encode(), action="start_batch").result(timeout=30)


def run_batch(stack: Stack, db: Engine, pipeline: str, batch_id: str, timeout_s: float) -> float:
    """Trigger a batch by publishing start_batch; wait for it to end; its wall time (s)."""
    if stack.info is None:
        raise BenchError("the stack is not running")
    publish_start(stack.info, pipeline, batch_id)

    def ended() -> bool:
        stack.check_alive()
        return (batch_state(db, pipeline, batch_id) or ("RUNNING",))[0] != "RUNNING"

    wait_for(
        ended,
        timeout_s,
        f"batch {pipeline}/{batch_id} to finish",
        poll_s=0.1,
    )
    state = batch_state(db, pipeline, batch_id)
    if state is None or state[0] != "SUCCESS" or state[1] is None:
        raise BenchError(f"batch {pipeline}/{batch_id} ended as {state}")
    return state[1]


# -- 1. hop latency and its floor ------------------------------------------------------------


def hop_latency(
    url: str, chain: int, floor_samples: int, pg_samples: int
) -> dict[str, list[float]]:
    db = create_engine(url, pool_size=2)
    try:
        insert_pipeline(db, "warm", 3, CHAIN)
        insert_pipeline(db, "hop", chain, CHAIN)
        with running_stack(url, workers=0, sweep_interval_s=0) as stack:
            run_batch(stack, db, "warm", "w1", 60)  # the router's first requests build clients
            push = push_floor(stack, floor_samples)
            run_batch(stack, db, "hop", "b1", 30 + chain)
        hops, in_engine = chain_hops(db, chain)
        pg = pg_roundtrips(db, pg_samples)
    finally:
        db.dispose()
    return {"hops_s": hops, "in_engine_s": in_engine, "push_s": push, "pg_s": pg}


def chain_hops(db: Engine, chain: int) -> tuple[list[float], list[float]]:
    """started_at[i+1] - started_at[i] for the chain (one router process, one clock); and each
    task's own claim-to-finish time."""
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT t.name, EXTRACT(EPOCH FROM tl.started_at), "
                "EXTRACT(EPOCH FROM tl.finished_at - tl.started_at) "
                "FROM task_log tl JOIN tasks t USING (task_id) "
                "WHERE tl.pipeline = 'hop' AND tl.batch_id = 'b1' AND tl.status = 'SUCCESS'"
            )
        ).all()
    by_name = {name: (float(start), float(spent)) for name, start, spent in rows}
    order = [by_name[task_name("hop", n)] for n in range(1, chain + 1)]
    hops = [b[0] - a[0] for a, b in itertools.pairwise(order)]
    return hops, [spent for _, spent in order]


def pg_roundtrips(db: Engine, samples: int) -> list[float]:
    """SELECT 1 on one open connection."""
    times = []
    with db.connect() as conn:
        statement = text("SELECT 1")
        conn.execute(statement).scalar_one()
        for _ in range(samples):
            started = time.perf_counter()
            conn.execute(statement).scalar_one()
            times.append(time.perf_counter() - started)
    return times


class _Receiver(BaseHTTPRequestHandler):
    """A trivial push endpoint. Like the router, it publishes the next message (``relay``)
    before it acknowledges the one that arrived."""

    relay: Callable[[str, float], None]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        arrived = time.perf_counter()
        data = json.loads(body)["message"]["data"]
        self.relay(base64.b64decode(data).decode(), arrived)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def receiver(relay: Callable[[str, float], None]) -> Iterator[int]:
    """A push endpoint on a free loopback port (yielded) served from a thread."""
    handler = type("Receiver", (_Receiver,), {"relay": staticmethod(relay)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="bench-receiver", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _Relay:
    """Message n arrives -> message n+1 is published (after the previous arrived, as a chain's
    next task is); the first gap warms up and is not counted."""

    def __init__(self, client: pubsub_v1.PublisherClient, topic: str, samples: int) -> None:
        self.client, self.topic, self.last = client, topic, samples + 1
        self.arrivals: dict[int, float] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def publish(self, n: int) -> None:
        self.client.publish(self.topic, str(n).encode()).result(timeout=DELIVERY_TIMEOUT_S)

    def __call__(self, data: str, arrived: float) -> None:
        n = int(data)
        with self.lock:
            if n in self.arrivals:  # a redelivery
                return
            self.arrivals[n] = arrived
        try:
            if n < self.last:
                self.publish(n + 1)
            else:
                self.done.set()
        except Exception as exc:  # noqa: BLE001 - handed to the waiting thread
            self.error = exc
            self.done.set()

    def gaps(self) -> list[float]:
        return [self.arrivals[n + 1] - self.arrivals[n] for n in range(1, self.last)]


def push_floor(stack: Stack, samples: int) -> list[float]:
    """Publish -> push delivery to a trivial receiver on a topic of its own: the gap between
    consecutive arrivals when each arrival publishes the next message."""
    info = stack.info
    if info is None:
        raise BenchError("the stack is not running")
    client = pubsub_v1.PublisherClient(batch_settings=BatchSettings(max_messages=1))
    relay = _Relay(client, client.topic_path(info.project_id, FLOOR_TOPIC), samples)
    with receiver(relay) as port:
        infra.ensure_subscription(
            info.project_id,
            FLOOR_TOPIC,
            f"{FLOOR_TOPIC}-push",
            push_endpoint=infra.push_endpoint(port, info.project_id, FLOOR_TOPIC),
        )
        relay.publish(0)
        finished = relay.done.wait(timeout=DELIVERY_TIMEOUT_S + samples)
    if relay.error is not None:
        raise BenchError(f"push floor: publish failed: {relay.error!r}")
    if not finished:
        raise BenchError(f"push floor: {len(relay.arrivals)} of {samples + 2} messages arrived")
    return relay.gaps()


# -- 4. wide batch ---------------------------------------------------------------------------


def wide_batch(url: str, tasks: int, workers: int, timeout_s: float) -> tuple[float, float]:
    """(wall time of the batch: batches.finished_at - created_at, seconds to insert the
    pipeline: 1 root -> tasks-2 middle -> 1 sink, through the dependency guard)."""
    db = create_engine(url, pool_size=2)
    try:
        started = time.perf_counter()
        insert_pipeline(db, "wide", tasks, WIDE)
        inserted = time.perf_counter() - started
        with running_stack(url, workers=workers, sweep_interval_s=2) as stack:
            return run_batch(stack, db, "wide", "b1", timeout_s), inserted
    finally:
        db.dispose()
