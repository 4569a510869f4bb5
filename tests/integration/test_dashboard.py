"""The dashboard behind the HTTP ``status`` function, in-process under functions-framework
against a real database: pages, JSON API, escaping, 404/405, and the OpenAPI contract."""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

import dagrelay.config
import dagrelay.store.db
from dagrelay.dashboard import app as dashboard
from dagrelay.dashboard import assets, model
from dagrelay.dashboard.app import SECURITY_HEADERS
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.messages import Rerun, StartBatch
from dagrelay.store import reads
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration.helpers import batch_status, drive, framework_client

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVIL = "<script>alert(1)</script>"
REJECTED_DATA = '{"action": "start_batch", "pipeline": "<b>etll</b>", "batch_id": "2024-03"}'
InsertPipeline = Callable[..., dict[str, int]]


def clear_caches() -> None:
    dagrelay.config.get_settings.cache_clear()
    dagrelay.store.db.get_engine.cache_clear()


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, db_url: str) -> Iterator[FlaskClient]:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.delenv("DAGRELAY_CONFIG", raising=False)
    clear_caches()
    yield framework_client("status", "http")
    clear_caches()


@pytest.fixture
def batches(
    insert_pipeline: InsertPipeline,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    db: Engine,
) -> None:
    """``dash/b1`` FAILED (bad -> child -> grandchild taken down; a dead letter); later
    ``other/b2`` SUCCESS."""
    insert_pipeline(
        "dash",
        {
            "root": [],
            "bad": ["root"],
            "ok": ["root"],
            "child": ["bad", "ok"],
            "grandchild": ["child"],
        },
        handlers={"bad": "python.fail"},
        params={"bad": json.dumps({"message": EVIL, "retryable": False})},
    )
    insert_pipeline("other", {"solo": []})
    engine.start_batch(StartBatch("dash", "b1", {"month": "03"}))
    drive(engine, publisher)
    clock.advance(60)
    engine.start_batch(StartBatch("other", "b2"))
    drive(engine, publisher)
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO dead_letters (message_id, action, pipeline, batch_id, task, "
                "delivery_attempts, payload_bytes, payload_sha256, reason) VALUES ('dl-1', "
                "'run_task', 'dash', 'b1', 'ok', 5, 0, encode(sha256(''), 'hex'), "
                "'too many deliveries <b>')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO rejected_messages (message_id, attributes, data, payload_bytes, "
                "payload_sha256, reason) VALUES ('rj-1', '{\"action\": \"start_batch\"}', "
                ":data, 60, encode(sha256('x'), 'hex'), 'start_batch: unknown pipeline <i>')"
            ),
            {"data": base64.b64encode(REJECTED_DATA.encode()).decode()},
        )
    assert batch_status(db, "dash", "b1") == "FAILED"
    assert batch_status(db, "other", "b2") == "SUCCESS"


def graph_data(html: str) -> dict[str, Any]:
    """The graph the page hands to its script (the JSON in <script id="graph-data">)."""
    found = re.search(r'<script type="application/json" id="graph-data">(.*?)</script>', html)
    assert found is not None, "the page carries no graph data"
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def nodes(html: str) -> dict[str, tuple[str, bool]]:
    """{task: (status, is a root cause)} of the graph's data."""
    data = graph_data(html)
    causes = set(data["causes"])
    return {n: (data["status"][i], i in causes) for i, n in enumerate(data["names"])}


# -- pages ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("batches")
def test_batches_page_newest_first_and_filtered(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert html.index("/batches/other/b2") < html.index("/batches/dash/b1")
    assert '<span class="pill status-FAILED">FAILED</span>' in html
    assert '<span class="pill status-SUCCESS">SUCCESS</span>' in html
    assert "1 ERROR" in html
    assert "2 UPSTREAM_FAILED" in html

    only = client.get("/?pipeline=other").get_data(as_text=True)
    assert "/batches/other/b2" in only
    assert "/batches/dash/b1" not in only
    assert '<option value="other" selected>' in only


def test_batches_page_when_there_are_none(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    assert "No batches yet." in html


@pytest.mark.usefixtures("batches")
def test_batch_page_draws_the_dag_by_state_with_the_root_cause(client: FlaskClient) -> None:
    response = client.get("/batches/dash/b1")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    drawn = nodes(html)
    assert {t: s for t, (s, _) in drawn.items()} == {
        "root": "SUCCESS",
        "bad": "ERROR",
        "ok": "SUCCESS",
        "child": "UPSTREAM_FAILED",
        "grandchild": "UPSTREAM_FAILED",
    }
    assert [t for t, (_, cause) in drawn.items() if cause] == ["bad"]
    data = graph_data(html)
    edges = {(data["names"][a], data["names"][b]) for a, b in data["edges"]}
    assert len(edges) == 5
    assert ("bad", "child") in edges
    assert data["task_url"] == "/batches/dash/b1/tasks/{task}"
    assert 'data-root-cause="bad"' in html
    assert "It took down 2: child, grandchild." in html
    assert "Dead letters" in html
    assert "too many deliveries &lt;b&gt;" in html
    assert "dl-1" not in html  # message ids are not shown, reasons are


@pytest.mark.usefixtures("batches")
def test_html_escapes_errors_from_the_database(client: FlaskClient) -> None:
    html = client.get("/batches/dash/b1").get_data(as_text=True)
    assert EVIL not in html
    assert html.count("<script") == 3  # ELK, our script, the graph's data
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.usefixtures("batches")
def test_pipeline_page_shows_tasks_uncoloured_dag_and_recent_batches(
    client: FlaskClient,
) -> None:
    response = client.get("/pipelines/dash")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert {s for s, _ in nodes(html).values()} == {"none"}
    assert set(nodes(html)) == {"root", "bad", "ok", "child", "grandchild"}
    assert "python.fail" in html
    assert "all_success" in html
    assert "/batches/dash/b1" in html
    assert "&lt;script&gt;" in html  # the failing task's params, escaped
    assert EVIL not in html


@pytest.mark.usefixtures("batches")
def test_pages_fetch_nothing_from_elsewhere(client: FlaskClient) -> None:
    pages = ("/", "/batches/dash/b1", "/batches/dash/b1/gantt", "/batches/dash/b1/tasks/bad")
    for path in (*pages, "/pipelines/dash", "/rejected", "/dead-letters"):
        response = client.get(path)
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy
        assert "script-src 'self';" in policy
        assert "unsafe" not in policy
        html = response.get_data(as_text=True)
        assert not re.search(r"<(link|img|iframe)\b(?![^>]*href=\"/assets/)", html), path
        scripts = re.findall(r"<script\b([^>]*)>", html)
        assert all(
            re.fullmatch(r' src="/assets/[a-z.]+\.js\?v=[0-9a-f]{16}" defer', a)
            or a == ' type="application/json" id="graph-data"'
            for a in scripts
        ), (path, scripts)
        assert not re.search(r"(src|href)=\"(https?:)?//", html), path
        assert not re.search(r"\son[a-z]+=", html), path  # no inline event handlers
        assert re.findall(r"https?://[^\"' )]+", html) == ["http://www.w3.org/2000/svg"] * (
            html.count("<svg")
        )


# -- JSON API ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("batches")
def test_api_batches_lists_filters_and_limits(client: FlaskClient) -> None:
    listed = client.get("/api/batches").get_json()["batches"]
    assert [(b["pipeline"], b["batch_id"]) for b in listed] == [("other", "b2"), ("dash", "b1")]
    failed = listed[1]
    assert failed["status"] == "FAILED"
    assert failed["task_counts"] == {"ERROR": 1, "SUCCESS": 2, "UPSTREAM_FAILED": 2}
    assert failed["total_tasks"] == 5
    assert failed["created_at"].startswith("2024-03-01T00:00:00")
    assert client.get("/api/batches?pipeline=dash").get_json()["batches"][0]["batch_id"] == "b1"
    assert len(client.get("/api/batches?limit=1").get_json()["batches"]) == 1
    for bad in ("0", "x", "501", "-1"):
        response = client.get(f"/api/batches?limit={bad}")
        assert response.status_code == 400
        assert "limit" in response.get_json()["error"]


@pytest.mark.usefixtures("batches")
def test_api_batch_has_tasks_edges_attempts_root_causes(client: FlaskClient) -> None:
    detail = client.get("/api/batches/dash/b1").get_json()
    assert detail["batch"]["params"] == {"month": "03"}
    by_task = {t["task"]: t for t in detail["tasks"]}
    assert EVIL in by_task["bad"]["error"]
    assert by_task["grandchild"]["root_cause_task"] == "bad"
    assert {(e["parent"], e["child"]) for e in detail["edges"]} == {
        ("root", "bad"),
        ("root", "ok"),
        ("bad", "child"),
        ("ok", "child"),
        ("child", "grandchild"),
    }
    assert [(a["task"], a["run"], a["attempt"], a["outcome"]) for a in detail["attempts"]] == [
        ("bad", 1, 1, "ERROR"),
        ("ok", 1, 1, "SUCCESS"),
        ("root", 1, 1, "SUCCESS"),
    ]
    assert detail["batch"]["version"] == 1
    (cause,) = detail["root_causes"]
    assert (cause["task"], cause["status"]) == ("bad", "ERROR")
    assert cause["took_down"] == ["child", "grandchild"]
    assert cause["error"] == by_task["bad"]["error"]
    assert [d["reason"] for d in detail["dead_letters"]] == ["too many deliveries <b>"]


@pytest.mark.usefixtures("batches")
def test_api_pipeline(client: FlaskClient) -> None:
    detail = client.get("/api/pipelines/dash").get_json()
    assert detail["pipeline"] == "dash"
    assert [t["task"] for t in detail["tasks"]] == ["bad", "child", "grandchild", "ok", "root"]
    assert {t["handler"] for t in detail["tasks"]} == {"python.noop", "python.fail"}
    assert len(detail["edges"]) == 5
    assert [b["batch_id"] for b in detail["batches"]] == ["b1"]


@pytest.mark.usefixtures("batches")
def test_legacy_batch_id_query_keeps_the_old_json(client: FlaskClient) -> None:
    response = client.get("/?batch_id=b1&pipeline=dash")
    assert response.status_code == 200
    (report,) = response.get_json()["batches"]
    assert report["status"] == "FAILED"
    assert {t["task"]: t["status"] for t in report["tasks"]}["child"] == "UPSTREAM_FAILED"
    assert client.get("/?batch_id=nope").status_code == 404


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("batches")
@pytest.mark.parametrize(
    ("path", "mimetype"),
    [
        ("/batches/dash/nope", "text/html"),
        ("/batches/nope/b1", "text/html"),
        ("/pipelines/nope", "text/html"),
        ("/no/such/page", "text/html"),
        ("/api/batches/dash/nope", "application/json"),
        ("/api/pipelines/nope", "application/json"),
        ("/api/nothing", "application/json"),
    ],
)
def test_unknown_things_are_404(client: FlaskClient, path: str, mimetype: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.mimetype == mimetype


@pytest.mark.usefixtures("batches")
@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/batches/dash/b1%00", 400, "NUL"),
        ("/api/batches/da%00sh/b1", 400, "NUL"),
        ("/pipelines/%00", 400, "NUL"),
        ("/?batch_id=b1%00", 400, "NUL"),
        ("/?batch_id=b1&pipeline=%00", 400, "NUL"),
        ("/api/batches?pipeline=x%00y", 400, "NUL"),
        ("/?x%00=1", 400, "NUL"),
        ("/api/batches?limit=%C2%B2", 400, "limit must be an integer"),
        ("/?limit=%C2%B2", 400, "limit must be an integer"),
        ("/api/pipelines/dash?limit=%EF%BC%95", 400, "limit must be an integer"),
        ("/api/batches/dash/b1%0A", 404, "Not Found"),
        ("/batches/dash%0A/b1", 404, "Not Found"),
        ("/api/batches/dash/%C2%B2", 404, "no batch"),
        ("/pipelines/dash%20", 404, "no pipeline"),
        ("/?batch_id=b1%0A", 404, "no batch"),
    ],
)
def test_hostile_paths_and_parameters_are_400_or_404(
    client: FlaskClient, path: str, status: int, reason: str
) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert reason in response.get_data(as_text=True)
    assert len(response.get_data()) < 5_000 or response.mimetype == "text/html"


@pytest.mark.usefixtures("batches")
@pytest.mark.parametrize(
    "path",
    [
        "/?batch_id=b1&pipeline=dash",
        "/?batch_id=nope",
        "/?batch_id=",
        "/?batch_id=b1%00",
        "/",
        "/batches/dash/b1",
        "/api/batches",
        "/api/nothing",
        "/openapi.json",
        "/no/such/page",
    ],
)
def test_every_response_carries_the_security_headers(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (path, name)
    assert client.post(path).headers.get("X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/batches/dash/b1",
        "/pipelines/dash",
        "/api/batches",
        "/api/batches/dash/b1",
        "/api/pipelines/dash",
        "/openapi.json",
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_only_get_is_allowed(client: FlaskClient, path: str, method: str) -> None:
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD"}


def test_reads_run_in_a_read_only_transaction(db: Engine) -> None:
    with pytest.raises(DBAPIError, match="read-only transaction"), reads.read_only(db) as conn:
        conn.execute(text("DELETE FROM batches"))


# -- the OpenAPI contract ---------------------------------------------------------------------

OPENAPI = json.loads((ROOT / "schema" / "openapi.json").read_text(encoding="utf-8"))
# (documented path, a concrete request, expected status)
EXCHANGES = [
    ("/api/batches", "/api/batches", 200),
    ("/api/batches", "/api/batches?pipeline=dash&limit=5", 200),
    ("/api/batches", "/api/batches?limit=zero", 400),
    ("/api/batches/{pipeline}/{batch_id}", "/api/batches/dash/b1", 200),
    ("/api/batches/{pipeline}/{batch_id}", "/api/batches/other/b2", 200),
    ("/api/batches/{pipeline}/{batch_id}", "/api/batches/dash/nope", 404),
    ("/api/pipelines/{pipeline}", "/api/pipelines/dash", 200),
    ("/api/pipelines/{pipeline}", "/api/pipelines/nope", 404),
    ("/api/pipelines/{pipeline}", "/api/pipelines/dash?limit=0", 400),
    ("/openapi.json", "/openapi.json", 200),
    ("/", "/", 200),
    ("/", "/?batch_id=b1", 200),
    ("/", "/?batch_id=nope", 404),
    ("/batches/{pipeline}/{batch_id}", "/batches/dash/b1", 200),
    ("/batches/{pipeline}/{batch_id}", "/batches/dash/nope", 404),
    ("/pipelines/{pipeline}", "/pipelines/other", 200),
    ("/pipelines/{pipeline}", "/pipelines/nope", 404),
    ("/batches/{pipeline}/{batch_id}/gantt", "/batches/dash/b1/gantt", 200),
    ("/batches/{pipeline}/{batch_id}/gantt", "/batches/dash/nope/gantt", 404),
    ("/batches/{pipeline}/{batch_id}/tasks/{task}", "/batches/dash/b1/tasks/bad", 200),
    ("/batches/{pipeline}/{batch_id}/tasks/{task}", "/batches/dash/b1/tasks/nope", 404),
    ("/rejected", "/rejected", 200),
    ("/rejected", "/rejected?limit=0", 400),
    ("/dead-letters", "/dead-letters?limit=10", 200),
    ("/asset-graph", "/asset-graph", 200),
    ("/assets/{name}", "/assets/dashboard.js", 200),
    ("/assets/{name}", "/assets/style.css", 200),
    ("/assets/{name}", "/assets/VENDORED.md", 404),
    ("/api/batches/{pipeline}/{batch_id}/tasks/{task}", "/api/batches/dash/b1/tasks/bad", 200),
    ("/api/batches/{pipeline}/{batch_id}/tasks/{task}", "/api/batches/dash/b1/tasks/x", 404),
    ("/api/batches/{pipeline}/{batch_id}/tasks/{task}", "/api/batches/dash/b9/tasks/bad", 404),
    ("/api/pipelines/{pipeline}/grid", "/api/pipelines/dash/grid", 200),
    ("/api/pipelines/{pipeline}/grid", "/api/pipelines/nope/grid", 404),
    ("/api/pipelines/{pipeline}/grid", "/api/pipelines/dash/grid?limit=x", 400),
    ("/api/rejected", "/api/rejected", 200),
    ("/api/rejected", "/api/rejected?limit=501", 400),
    ("/api/dead-letters", "/api/dead-letters", 200),
]


def validate(schema: dict[str, Any], instance: Any) -> None:
    """Validate against a schema of the document, its $refs resolved within the document."""
    root = {**schema, "components": OPENAPI["components"]}
    Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(
        instance
    )


def test_openapi_document_is_served_and_is_3_1() -> None:
    assert OPENAPI["openapi"].startswith("3.1")
    Draft202012Validator.check_schema({"$defs": OPENAPI["components"]["schemas"]})


def test_openapi_paths_are_exactly_the_routes() -> None:
    routes = {
        re.sub(r"<(\w+)>", r"{\1}", r.rule): {m.lower() for m in r.methods or ()}
        - {"head", "options"}
        for r in dashboard.ROUTES.iter_rules()
    }
    assert {path: set(ops) for path, ops in OPENAPI["paths"].items()} == routes
    read = {path for path, ops in routes.items() if ops == {"get"}}
    assert {p for p, _, _ in EXCHANGES} == read, "every documented GET path is exercised"
    assert set(routes) - read == {"/actions/{action}"}


@pytest.mark.usefixtures("batches")
@pytest.mark.parametrize(("documented", "request_path", "status"), EXCHANGES)
def test_responses_conform_to_the_openapi_document(
    client: FlaskClient, documented: str, request_path: str, status: int
) -> None:
    response = client.get(request_path)
    assert response.status_code == status
    operation = OPENAPI["paths"][documented]["get"]
    content = operation["responses"][str(status)]["content"]
    assert response.mimetype in content, f"{response.mimetype} is not documented"
    schema = content[response.mimetype]["schema"]
    body = (
        response.get_json()
        if response.mimetype == "application/json"
        else response.get_data(as_text=True)
    )
    validate(schema, body)
    if request_path == "/openapi.json":
        assert body == OPENAPI


# -- the task, Gantt, grid and message pages ----------------------------------------------------


@pytest.fixture
def rerun_once(batches: None, engine: DagEngine, publisher: InMemoryPublisher) -> None:
    """``bad`` of dash/b1 rerun (with its downstream): it fails again, in a second run."""
    engine.rerun(Rerun(batch_id="b1", task="bad", pipeline="dash", downstream=True))
    drive(engine, publisher)


@pytest.mark.usefixtures("rerun_once")
def test_task_page_numbers_attempts_by_run_and_shows_params_and_traceback(
    client: FlaskClient,
) -> None:
    detail = client.get("/api/batches/dash/b1/tasks/bad").get_json()
    assert [(a["run"], a["attempt"], a["outcome"]) for a in detail["attempts"]] == [
        (1, 1, "ERROR"),
        (2, 1, "ERROR"),
    ]
    assert [a["current"] for a in detail["attempts"]] == [False, True]
    assert detail["params"] == {"message": EVIL, "retryable": False}
    assert detail["resolved_params"] == detail["params"]
    assert (detail["parents"], detail["children"]) == (["root"], ["child"])
    assert all(a["traceback"] for a in detail["attempts"])
    html = client.get("/batches/dash/b1/tasks/bad").get_data(as_text=True)
    assert html.count('<span class="run">run 1</span>') == 1
    assert html.count('<span class="run">run 2</span>') == 1
    assert "run 2 · attempt 1" in html  # the traceback of the latest attempt, open
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="/batches/dash/b1/tasks/child"' in html


# The task page shows the params of the batch's version (a live edit does not reach the batch):
# the test sets them there directly.
UPDATE_BATCH_PARAMS = (
    "UPDATE version_tasks SET params = :p WHERE name = 'ok' AND version_id = "
    "(SELECT version_id FROM batches WHERE pipeline = 'dash' AND batch_id = 'b1')"
)


@pytest.mark.usefixtures("batches")
def test_task_page_resolves_placeholders_with_the_batch_params(
    client: FlaskClient, db: Engine
) -> None:
    with db.begin() as conn:
        conn.execute(
            text(UPDATE_BATCH_PARAMS),
            {"p": json.dumps({"path": "in/{month}/{batch_id}.csv", "bad": "{nope}"})},
        )
    detail = client.get("/api/batches/dash/b1/tasks/ok").get_json()
    assert detail["resolved_params"] is None
    assert "unknown placeholder {nope}" in detail["resolve_error"]
    with db.begin() as conn:
        conn.execute(
            text(UPDATE_BATCH_PARAMS),
            {"p": json.dumps({"path": "in/{month}/{batch_id}.csv"})},
        )
    detail = client.get("/api/batches/dash/b1/tasks/ok").get_json()
    assert detail["resolved_params"] == {"path": "in/03/b1.csv"}


@pytest.mark.usefixtures("rerun_once")
def test_gantt_draws_a_bar_per_attempt_labelled_by_run(client: FlaskClient) -> None:
    html = client.get("/batches/dash/b1/gantt").get_data(as_text=True)
    bars = re.findall(r'<g class="attempt outcome-(\w+)" data-task="(\w+)" data-run="(\d)"', html)
    assert sorted(bars) == [
        ("ERROR", "bad", "1"),
        ("ERROR", "bad", "2"),
        ("SUCCESS", "ok", "1"),
        ("SUCCESS", "root", "1"),
    ]


@pytest.mark.usefixtures("batches")
def test_grid_shows_each_batch_and_task_by_state(client: FlaskClient) -> None:
    grid = client.get("/api/pipelines/dash/grid").get_json()
    assert [b["batch_id"] for b in grid["batches"]] == ["b1"]
    assert grid["batches"][0]["statuses"]["child"] == "UPSTREAM_FAILED"
    html = client.get("/pipelines/dash").get_data(as_text=True)
    cells = re.findall(r'<a class="cell status-(\w+)" href="/batches/dash/b1/tasks/(\w+)"', html)
    assert {t: st for st, t in cells} == {
        "root": "SUCCESS",
        "bad": "ERROR",
        "ok": "SUCCESS",
        "child": "UPSTREAM_FAILED",
        "grandchild": "UPSTREAM_FAILED",
    }


@pytest.mark.usefixtures("batches")
def test_rejected_and_dead_letter_pages_decode_and_escape_payloads(client: FlaskClient) -> None:
    (rejected,) = client.get("/api/rejected").get_json()["rejected"]
    assert rejected["preview"] == REJECTED_DATA
    assert rejected["reason"] == "start_batch: unknown pipeline <i>"
    html = client.get("/rejected").get_data(as_text=True)
    assert "&lt;b&gt;etll&lt;/b&gt;" in html
    assert "<b>etll" not in html
    assert "unknown pipeline &lt;i&gt;" in html
    assert "60 B" in html
    (letter,) = client.get("/api/dead-letters").get_json()["dead_letters"]
    assert (letter["task"], letter["delivery_attempts"]) == ("ok", 5)
    html = client.get("/dead-letters").get_data(as_text=True)
    assert "too many deliveries &lt;b&gt;" in html
    assert 'href="/batches/dash/b1"' in html


def test_preview_of_message_data() -> None:
    assert model.preview(base64.b64encode(b"caf\xc3\xa9 \xff").decode()) == "café \\xff"
    assert model.preview("not base64!") == "not base64!"
    assert model.preview(None) == ""
    assert model.preview(base64.b64encode(b"x" * 50).decode(), limit=10) == "x" * 10 + "…"


def test_static_files_are_served_gzipped_with_their_hash(client: FlaskClient) -> None:
    elk = assets.asset("elk.bundled.js")
    assert elk is not None
    response = client.get(
        f"/assets/elk.bundled.js?v={elk.version}", headers={"Accept-Encoding": "gzip, br"}
    )
    assert response.status_code == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(response.get_data()) == elk.body
    assert response.headers["Cache-Control"] == assets.FOREVER
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    html = client.get("/batches/nope/b1").get_data(as_text=True)
    assert f'href="/assets/style.css?v={assets.asset("style.css").version}"' in html  # type: ignore[union-attr]


def test_asset_graph_draws_producers_assets_and_consumers_escaped(
    client: FlaskClient, db: Engine
) -> None:
    empty = client.get("/asset-graph").get_data(as_text=True)
    assert "No asset: declare them" in empty
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tasks (name, pipeline, handler, updates) VALUES "
                "('s.load', 'sales', 'python.noop', ARRAY['bq://finance.sales', :evil]), "
                "('p.t', 'profit', 'python.noop', '{bq://finance.profit}')"
            ),
            {"evil": EVIL},
        )
        conn.execute(
            text(
                "INSERT INTO asset_schedules (pipeline, assets, last_error) "
                "VALUES ('profit', ARRAY['bq://finance.sales'], :evil)"
            ),
            {"evil": EVIL},
        )
    response = client.get("/asset-graph")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<svg class="asset-graph"' in html
    # sales -> bq://finance.sales -> profit -> bq://finance.profit: four columns
    assert html.count('<g class="pipeline">') == 2
    assert html.count('<g class="asset">') == 3
    assert html.count('<line class="edge"') == 4
    assert 'href="/pipelines/profit"' in html
    assert 'href="/asset-graph"' in html  # in the navigation
