"""The dashboard behind the HTTP ``status`` function, in-process under functions-framework
against a real database: pages, JSON API, escaping, 404/405, and the OpenAPI contract."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

import dagrelay.config
import dagrelay.store.db
from dagrelay.dashboard import app as dashboard
from dagrelay.dashboard.app import SECURITY_HEADERS
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.messages import StartBatch
from dagrelay.store import reads
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration.helpers import batch_status, drive

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVIL = "<script>alert(1)</script>"
InsertPipeline = Callable[..., dict[str, int]]


def clear_caches() -> None:
    dagrelay.config.get_settings.cache_clear()
    dagrelay.store.db.get_engine.cache_clear()


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, db_url: str) -> Iterator[FlaskClient]:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.delenv("DAGRELAY_CONFIG", raising=False)
    clear_caches()
    app = functions_framework.create_app(
        target="status", source=str(ROOT / "functions" / "main.py"), signature_type="http"
    )
    yield app.test_client()
    if dagrelay.store.db.get_engine.cache_info().currsize:
        dagrelay.store.db.get_engine().dispose()
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
    assert batch_status(db, "dash", "b1") == "FAILED"
    assert batch_status(db, "other", "b2") == "SUCCESS"


def nodes(html: str) -> dict[str, tuple[str, str]]:
    """{data-task: (class, data-status)} of the SVG nodes."""
    found = re.findall(
        r'<g id="node-[^"]*" class="([^"]*)" data-task="([^"]*)" '
        r'data-status="([^"]*)"',
        html,
    )
    return {task: (classes, status) for classes, task, status in found}


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
    assert {t: s for t, (_, s) in drawn.items()} == {
        "root": "SUCCESS",
        "bad": "ERROR",
        "ok": "SUCCESS",
        "child": "UPSTREAM_FAILED",
        "grandchild": "UPSTREAM_FAILED",
    }
    assert "root-cause" in drawn["bad"][0].split()
    assert "status-ERROR" in drawn["bad"][0].split()
    assert all("root-cause" not in c for t, (c, _) in drawn.items() if t != "bad")
    assert html.count('class="edge"') == 5
    assert 'data-parent="bad" data-child="child"' in html
    assert 'data-root-cause="bad"' in html
    assert "It took down 2: child, grandchild." in html
    assert "Dead letters" in html
    assert "too many deliveries &lt;b&gt;" in html
    assert "dl-1" not in html  # message ids are not shown, reasons are


@pytest.mark.usefixtures("batches")
def test_html_escapes_errors_from_the_database(client: FlaskClient) -> None:
    html = client.get("/batches/dash/b1").get_data(as_text=True)
    assert EVIL not in html
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.usefixtures("batches")
def test_pipeline_page_shows_tasks_uncoloured_dag_and_recent_batches(
    client: FlaskClient,
) -> None:
    response = client.get("/pipelines/dash")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert {s for _, s in nodes(html).values()} == {"none"}
    assert set(nodes(html)) == {"root", "bad", "ok", "child", "grandchild"}
    assert "python.fail" in html
    assert "all_success" in html
    assert "/batches/dash/b1" in html
    assert "&lt;script&gt;" in html  # the failing task's params, escaped
    assert EVIL not in html


@pytest.mark.usefixtures("batches")
def test_pages_fetch_nothing(client: FlaskClient) -> None:
    for path in ("/", "/batches/dash/b1", "/pipelines/dash"):
        response = client.get(path)
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        html = response.get_data(as_text=True)
        assert not re.search(r"<(script|link|img|iframe)\b", html), path
        assert not re.search(r"(src|href)=\"(https?:)?//", html), path
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
    assert [(a["task"], a["attempt"], a["outcome"]) for a in detail["attempts"]] == [
        ("bad", 1, "ERROR"),
        ("ok", 1, "SUCCESS"),
        ("root", 1, "SUCCESS"),
    ]
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
    routes = {re.sub(r"<(\w+)>", r"{\1}", r.rule) for r in dashboard.ROUTES.iter_rules()}
    assert set(OPENAPI["paths"]) == routes
    assert all(set(ops) == {"get"} for ops in OPENAPI["paths"].values())
    assert {p for p, _, _ in EXCHANGES} == routes, "every documented path is exercised"


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
