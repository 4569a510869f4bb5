"""Hostile HTTP requests for the dashboard's functions, generated from a seed: the same seed
gives the same requests. Beside ``tests/e2e/hostile.py`` (the router's messages)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

TOKEN = "t" * 43
SAME = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
FORM = "application/x-www-form-urlencoded"
ACTIONS = ("trigger", "rerun", "rerun-failed", "cancel", "resume")


@dataclass(frozen=True)
class Request:
    category: str
    function: str  # "status" or "operate"
    method: str
    path: str
    body: bytes = b""
    content_type: str | None = FORM
    headers: dict[str, str] = field(default_factory=dict)


def _form(rng: random.Random, **fields: str) -> bytes:
    base = {"pipeline": "ops", "batch_id": f"f{rng.randint(0, 10**6)}", "csrf_token": TOKEN}
    return urlencode(base | fields).encode()


def _post(
    category: str,
    action: str,
    body: bytes,
    headers: dict[str, str],
    content_type: str | None = FORM,
) -> Request:
    return Request(category, "operate", "POST", f"/actions/{action}", body, content_type, headers)


def deep_json(rng: random.Random) -> Request:
    depth = rng.choice([rng.randint(400, 600), rng.randint(1_000, 100_000)])
    opener = rng.choice(['{"a":', "["])
    return _post("deep JSON", "trigger", _form(rng, params=opener * depth), headers=SAME)


def huge_body(rng: random.Random) -> Request:
    size = rng.choice([rng.randint(1_000_000, 2_000_000), rng.randint(2_100_000, 20_000_000)])
    body = _form(rng, params=json.dumps({"v": "x" * size}))
    return _post("huge body", rng.choice(ACTIONS), body, headers=SAME)


def bad_encoding(rng: random.Random) -> Request:
    good = _form(rng, params='{"month": "2024-03"}')
    cut = rng.randint(0, len(good))
    junk = rng.choice([b"%FF", b"%C3%28", b"%ED%A0%80", b"\xff", b"\xc3", b"%F8%88%80"])
    return _post("bad encoding", "trigger", good[:cut] + junk + good[cut:], headers=SAME)


def bad_numbers(rng: random.Random) -> Request:
    value = rng.choice(["1e999", "-1e999", "NaN", "Infinity", "1" * 5_000, "1e-999999"])
    body = _form(rng, params=f'{{"n": {value}}}')
    return _post("non-finite numbers", "trigger", body, headers=SAME)


def wrong_content_type(rng: random.Random) -> Request:
    kind = rng.choice(["application/json", "text/plain", "multipart/form-data; boundary=x", None])
    body = json.dumps({"pipeline": "ops", "batch_id": "b2", "csrf_token": TOKEN}).encode()
    return _post("wrong content type", rng.choice(ACTIONS), body, content_type=kind, headers=SAME)


def missing_csrf(rng: random.Random) -> Request:
    headers = rng.choice(
        [{}, SAME, {"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}]
    )
    body = _form(rng) if rng.random() < 0.5 else b"pipeline=ops&batch_id=b2"
    return _post("missing CSRF", rng.choice(ACTIONS), body, headers=headers)


def unknown_fields(rng: random.Random) -> Request:
    extra = {f"x{i}": "y" * rng.randint(0, 50) for i in range(rng.randint(1, 80))}
    return _post("unknown fields", rng.choice(ACTIONS), _form(rng, **extra), headers=SAME)


def traversal(rng: random.Random) -> Request:
    path = rng.choice(
        [
            "/assets/../../etc/passwd",
            "/assets/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "/batches/../../../etc/passwd",
            "/api/batches/..%2f..%2f/x",
            "/actions/../api/batches",
            "/api/pipelines/%2e%2e",
            "/assets/..%5c..%5cwin.ini",
            "//etc/passwd",
        ]
    )
    function = rng.choice(["status", "operate"])
    return Request("path traversal", function, "GET", path, content_type=None)


def nul(rng: random.Random) -> Request:
    where = rng.randint(0, 3)
    if where == 0:
        return Request("NUL", "status", "GET", "/api/batches?pipeline=a%00b", content_type=None)
    if where == 1:
        return Request("NUL", "status", "GET", "/batches/ops%00/b1", content_type=None)
    field = rng.choice(["pipeline", "batch_id", "params", "task", "csrf_token"])
    value = '{"a": "\\u0000"}' if field == "params" and where == 2 else "a\x00b"
    return _post("NUL", "trigger", _form(rng, **{field: value}), headers=SAME)


def long_strings(rng: random.Random) -> Request:
    text = rng.choice("aé/%\\\"'<>") * rng.randint(1_000, 100_000)
    if rng.random() < 0.5:
        return Request(
            "long strings",
            "status",
            "GET",
            f"/api/batches?pipeline={text[:8_000]}",
            content_type=None,
        )
    field = rng.choice(["pipeline", "batch_id", "task", "start_task"])
    return _post("long strings", rng.choice(ACTIONS), _form(rng, **{field: text}), headers=SAME)


def api_noise(rng: random.Random) -> Request:
    path = rng.choice(
        ["/api/batches", "/api/rejected", "/api/dead-letters", "/openapi.json", "/", "/rejected"]
    )
    query = rng.choice(
        [
            "",
            "?limit=0",
            "?limit=-1",
            "?limit=99999999999999999999",
            "?limit=%FF",
            "?pipeline=%ED%A0%80",
            "?batch_id=" + "x" * 300,
            "?limit=%C2%B2",
        ]
    )
    method = rng.choice(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"])
    return Request(
        "JSON API noise", rng.choice(["status", "operate"]), method, path + query, content_type=None
    )


def valid(rng: random.Random) -> Request:
    return _post(
        "valid trigger", "trigger", _form(rng, params='{"month": "2024-03"}'), headers=SAME
    )


Maker = Callable[[random.Random], Request]
CATEGORIES: tuple[Maker, ...] = (
    deep_json, huge_body, bad_encoding, bad_numbers, wrong_content_type, missing_csrf,
    unknown_fields, traversal, nul, long_strings, api_noise, valid,
)  # fmt: skip


def requests(seed: int, count: int) -> list[Request]:
    """``count`` requests, every category at least once, the rest drawn at random."""
    rng = random.Random(seed)
    makers = list(CATEGORIES) + [rng.choice(CATEGORIES) for _ in range(count - len(CATEGORIES))]
    return [make(rng) for make in makers]
