"""Hostile messages through the real emulator and the router under functions-framework, wired as
the local stack wires it (push subscriptions, the events subscription's dead-letter policy, the
dead-letter subscription's own delivery): every message published ends processed, rejected
(recorded) or dead-lettered — exactly one of them — and the router serves throughout."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import requests
from google.cloud import pubsub_v1
from sqlalchemy import Engine, text

from dagrelay.local.processes import wait_for
from dagrelay.local.stack import Stack, StackInfo
from tests.e2e.hostile import (
    DEAD_LETTER,
    OUTCOMES,
    PIPELINE,
    PROCESSED,
    REJECTED,
    Case,
    generate,
)
from tests.e2e.sql_pipelines import insert_with_sql

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("DAGRELAY_HOSTILE_SEED", "20261122"))
DEADLINE_S = 200


def publish_all(info: StackInfo, cases: list[Case]) -> None:
    client = pubsub_v1.PublisherClient()
    topics = {
        flag: client.topic_path(info.project_id, name)
        for flag, name in ((False, info.events_topic), (True, info.dead_letter_topic))
    }
    futures = [
        client.publish(topics[c.dead_letter_topic], c.data, **c.publish_attributes()) for c in cases
    ]
    for future in futures:
        future.result(timeout=120)


def outcomes(db: Engine, prefix: str) -> dict[str, list[str]]:
    """marker -> where it was found (a list, to catch a message found twice)."""
    found: dict[str, list[str]] = {}
    queries = {
        PROCESSED: "SELECT batch_id FROM batches WHERE batch_id LIKE :p",
        REJECTED: "SELECT attributes->>'hostile' FROM rejected_messages "
        "WHERE attributes->>'hostile' LIKE :p",
        DEAD_LETTER: "SELECT attributes->>'hostile' FROM dead_letters "
        "WHERE attributes->>'hostile' LIKE :p",
    }
    with db.connect() as conn:
        for outcome, sql in queries.items():
            for marker in conn.execute(text(sql), {"p": f"{prefix}%"}).scalars():
                found.setdefault(marker, []).append(outcome)
    return found


def table(cases: list[Case], found: dict[str, list[str]]) -> tuple[str, dict[str, Counter[str]]]:
    counts: dict[str, Counter[str]] = {}
    for case in cases:
        counts.setdefault(case.category, Counter()).update(found.get(case.marker, ["missing"]))
    width = max(len(c) for c in counts)
    lines = [f"{'category':<{width}}  {'sent':>5}  " + "  ".join(f"{o:>11}" for o in OUTCOMES)]
    for category, seen in counts.items():
        sent = sum(1 for c in cases if c.category == category)
        lines.append(
            f"{category:<{width}}  {sent:>5}  " + "  ".join(f"{seen[o]:>11}" for o in OUTCOMES)
        )
    total = Counter[str]()
    for seen in counts.values():
        total.update(seen)
    lines.append(
        f"{'total':<{width}}  {len(cases):>5}  " + "  ".join(f"{total[o]:>11}" for o in OUTCOMES)
    )
    return "\n".join(lines), counts


def router_serves(stack: Stack, info: StackInfo) -> None:
    stack.check_alive()
    response = requests.get(info.router_url, timeout=10)
    assert response.status_code < 500, response.text[:200]


def test_every_hostile_message_is_accounted_for(
    stack: tuple[Stack, StackInfo],
    stack_db: Engine,
    wait_batch: Callable[..., dict[str, Any]],
    publish: Callable[..., str],
) -> None:
    local, info = stack
    insert_with_sql(stack_db, PIPELINE, {"only": ("python.noop", "{}")}, [])
    cases = list(generate(SEED))
    assert len(cases) >= 3_000
    assert len({c.marker for c in cases}) == len(cases)
    prefix = f"hx{SEED}-"

    started = time.monotonic()
    publish_all(info, cases)
    published_s = time.monotonic() - started
    found: dict[str, list[str]] = {}

    def all_accounted() -> bool:
        router_serves(local, info)
        found.clear()
        found.update(outcomes(stack_db, prefix))
        return len(found) >= len(cases)

    try:
        wait_for(all_accounted, DEADLINE_S, "every hostile message accounted for", poll_s=1.0)
    finally:
        report, counts = table(cases, outcomes(stack_db, prefix))
        print(
            f"\nhostile messages, seed {SEED}: published in {published_s:.1f} s, "
            f"accounted for in {time.monotonic() - started:.1f} s\n{report}"
        )

    assert {m: w for m, w in found.items() if len(w) != 1} == {}, "found in two places"
    assert sum(sum(c.values()) for c in counts.values()) == len(cases)
    wrong = [
        (c.category, c.marker, found[c.marker]) for c in cases if found[c.marker] != [c.expected]
    ]
    assert wrong == []

    router_serves(local, info)
    publish({"action": "start_batch", "pipeline": PIPELINE, "batch_id": "after-hostile"})
    assert wait_batch(PIPELINE, "after-hostile")["status"] == "SUCCESS"
