"""Hostile Pub/Sub messages, generated from a seed: the same seed gives the same messages.

Each case carries a marker — the attribute ``hostile`` and, for a start_batch that should run,
its batch_id — so that wherever the message ends (a batch, rejected_messages, dead_letters) it
can be found again. ``expected`` is where it must end.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

PIPELINE = "hostile"
PROCESSED, REJECTED, DEAD_LETTER = "processed", "rejected", "dead letter"
OUTCOMES = (PROCESSED, REJECTED, DEAD_LETTER)


@dataclass(frozen=True)
class Case:
    category: str
    marker: str
    data: bytes
    expected: str
    attributes: dict[str, str] = field(default_factory=dict)
    dead_letter_topic: bool = False

    def publish_attributes(self) -> dict[str, str]:
        return {**self.attributes, "hostile": self.marker}


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _start(marker: str, **fields: Any) -> dict[str, Any]:
    return {"action": "start_batch", "pipeline": PIPELINE, "batch_id": marker, **fields}


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


Maker = Callable[[random.Random, str], tuple[bytes, dict[str, str]]]


def random_bytes(rng: random.Random, marker: str) -> tuple[bytes, dict[str, str]]:
    return rng.randbytes(rng.randint(0, 2000)), {}


def invalid_utf8(rng: random.Random, marker: str) -> tuple[bytes, dict[str, str]]:
    good = _json(_start(marker))
    cut = rng.randint(0, len(good))
    return good[:cut] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88"]) + good[
        cut:
    ], {}


def nul_anywhere(rng: random.Random, marker: str) -> tuple[bytes, dict[str, str]]:
    variants: list[tuple[bytes, dict[str, str]]] = [
        (_json(_start(marker, triggered_by=f"me\u0000{rng.random()}")), {}),
        (_json(_start(marker, params={"k": "a\u0000" * rng.randint(1, 5)})), {}),
        (_json(_start(marker, params={f"k\u0000{rng.randint(0, 9)}": 1})), {}),
        (_json(_start(marker + "\u0000")), {}),
        (_json({**_start(marker), "pipeline": "hostile\u0000"}), {}),
        (_json({**_start(marker), "action": "start_batch\u0000"}), {}),
        (_json(_start(marker)).replace(b'"batch_id"', b'"batch\x00_id"'), {}),  # a raw NUL byte
        (_json(_start(marker)), {"origin": f"x\u0000{rng.random()}"}),
        (_json(_start(marker)), {f"k\u0000{rng.randint(0, 99)}": "v"}),
    ]
    return rng.choice(variants)


def wrong_types(rng: random.Random, marker: str) -> tuple[bytes, dict[str, str]]:
    bad: list[dict[str, Any]] = [
        {**_start(marker), "pipeline": rng.randint(0, 9)},
        {**_start(marker), "batch_id": [marker]},
        _start(marker, params=["a", "b"]),
        _start(marker, params="p=1"),
        _start(marker, triggered_by={"who": "me"}),
        _start(marker, start_task=True),
        _start(marker, extra=1),
        {"action": "sweep", "older_than_s": rng.choice([-1, "10", 86_401, 1.5, None])},
        {"action": "run_task", "batch_id": marker},
        {"action": "poll_task", "batch_id": marker, "task": "t", "attempt": rng.choice([0, "1"])},
        {"action": "rerun", "batch_id": marker, "task": "t", "downstream": "yes"},
        {"action": "cancel_batch", "pipeline": PIPELINE},
    ]
    return _json(rng.choice(bad)), {}


def check_breaking(rng: random.Random, marker: str) -> tuple[bytes, dict[str, str]]:
    """Values a pattern with Python's '$' let through and the database's CHECKs refuse."""
    bad: list[dict[str, Any]] = [
        _start(marker + rng.choice(["\n", "\r\n", "\u00b2", " "])),
        {**_start(marker), "pipeline": PIPELINE + "\n"},
        _start(marker, start_task="t\n"),
        _start(marker, params={"key\n": 1}),
        _start(marker, triggered_by="x" * 201),
        {**_start(marker), "batch_id": "b" * 128 + "\n"},
    ]
    return _json(rng.choice(bad)), {}


def unknown_action(rng: random.Random, marker: str) -> tuple[bytes, dict[str, str]]:
    action = rng.choice(["explode", "", "START_BATCH", "start_batch\n", 7, None, ["run_task"]])
    body: dict[str, Any] = {"pipeline": PIPELINE, "batch_id": marker}
    if rng.random() < 0.9:
        body["action"] = action
    return _json(body), {}


def disagreeing_attributes(rng: random.Random, marker: str) -> tuple[bytes, dict[str, str]]:
    return _json(_start(marker)), {"action": rng.choice(["run_task", "sweep", "x", ""])}


def deep_rejected(rng: random.Random, marker: str) -> tuple[bytes, dict[str, str]]:
    depth = rng.randint(2_000, 60_000)
    if rng.random() < 0.5:
        return b'{"action": "start_batch", "params": ' + b"[" * depth, {}
    return _json(_start(marker)).replace(b"}", b', "params": ' + b'{"a":' * depth, 1), {}


def deep_processed(rng: random.Random, marker: str) -> tuple[bytes, dict[str, str]]:
    return _json(_start(marker, params=_nested(rng.randint(50, 300)))), {}


def valid(rng: random.Random, marker: str) -> tuple[bytes, dict[str, str]]:
    params = {f"p{i}": rng.random() for i in range(rng.randint(0, 5))}
    return _json(_start(marker, params=params, triggered_by="hostile-test")), {
        "action": "start_batch"
    }


def huge(rng: random.Random, marker: str) -> tuple[bytes, dict[str, str]]:
    size = rng.randint(1_100_000, 3_000_000)
    return _json(_start(marker, params={"blob": "x" * size})), {}


def very_huge(rng: random.Random, marker: str) -> tuple[bytes, dict[str, str]]:
    return rng.randbytes(rng.randint(7_000_000, 9_000_000)), {}


def to_dead_letter_topic(rng: random.Random, marker: str) -> tuple[bytes, dict[str, str]]:
    maker = rng.choice([valid, random_bytes, nul_anywhere, invalid_utf8, check_breaking])
    return maker(rng, marker)


# category -> (how many, how made, where each must end, published to the dead-letter topic)
PLAN: dict[str, tuple[int, Maker, str, bool]] = {
    "random bytes": (500, random_bytes, REJECTED, False),
    "invalid UTF-8": (300, invalid_utf8, REJECTED, False),
    "NUL anywhere": (400, nul_anywhere, REJECTED, False),
    "huge (1-3 MB)": (20, huge, REJECTED, False),
    "huge (7-9 MB)": (3, very_huge, REJECTED, False),
    "deeply nested (too deep)": (140, deep_rejected, REJECTED, False),
    "deeply nested (valid)": (60, deep_processed, PROCESSED, False),
    "wrong types": (400, wrong_types, REJECTED, False),
    "CHECK-breaking values": (300, check_breaking, REJECTED, False),
    "unknown actions": (300, unknown_action, REJECTED, False),
    "attributes disagreeing": (300, disagreeing_attributes, REJECTED, False),
    "to the dead-letter topic": (300, to_dead_letter_topic, DEAD_LETTER, True),
    "valid start_batch": (140, valid, PROCESSED, False),
}


def generate(seed: int) -> Iterator[Case]:
    rng = random.Random(seed)
    index = 0
    for category, (count, make, expected, dead_letter_topic) in PLAN.items():
        for _ in range(count):
            marker = f"hx{seed}-{index}"
            data, attributes = make(rng, marker)
            yield Case(category, marker, data, expected, attributes, dead_letter_topic)
            index += 1
