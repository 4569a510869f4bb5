"""The dashboard behind the HTTP functions: a werkzeug routing map, one view per route, JSON for
``/api/*`` and HTML for the rest. Pages and the API answer GET (and HEAD) only and change
nothing. The same code serves two functions: ``status`` (read-only, for viewers) and
``operate`` (``handle(..., operate=True)``, for operators), which also takes the actions'
POSTs under ``/actions/`` — each checked against cross-site requests (``csrf``), recording who
asked (``identity``), publishing what the CLI publishes (``actions``, ``publish``). The legacy
``/?batch_id=`` JSON of the status function is kept as an alias."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

from flask import Request, Response
from werkzeug.exceptions import BadRequest, Forbidden, HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule

from dagrelay.config import get_settings
from dagrelay.dashboard import actions, csrf, identity, limits, model, pages, publish, render
from dagrelay.dashboard.assets import FOREVER, asset
from dagrelay.dashboard.parts import Ops, url
from dagrelay.errors import DagrelayError
from dagrelay.messages import unstorable
from dagrelay.names import is_batch_id, is_name
from dagrelay.resources import schema_dir
from dagrelay.store import assets as store_assets
from dagrelay.store.db import get_engine
from dagrelay.store.reads import batch_statuses, pipelines_shown, read_only, status_response

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
RECENT = 20
GZIP_OVER = 2048  # bytes
# Nothing may come from anywhere but this origin: our stylesheet and scripts (no inline script,
# no inline style), the JSON API for live refresh, forms posting back here.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
READ = ["GET"]
ROUTES = Map(
    [
        Rule("/", endpoint="index", methods=READ),
        Rule("/batches/<pipeline>/<batch_id>", endpoint="batch", methods=READ),
        Rule("/batches/<pipeline>/<batch_id>/gantt", endpoint="gantt", methods=READ),
        Rule("/batches/<pipeline>/<batch_id>/tasks/<task>", endpoint="task", methods=READ),
        Rule("/pipelines/<pipeline>", endpoint="pipeline", methods=READ),
        Rule("/rejected", endpoint="rejected", methods=READ),
        Rule("/dead-letters", endpoint="dead_letters", methods=READ),
        Rule("/asset-graph", endpoint="asset_graph", methods=READ),
        # not /static/: the Flask app of functions-framework serves that path itself
        Rule("/assets/<name>", endpoint="asset", methods=READ),
        Rule("/api/batches", endpoint="api_batches", methods=READ),
        Rule("/api/batches/<pipeline>/<batch_id>", endpoint="api_batch", methods=READ),
        Rule("/api/batches/<pipeline>/<batch_id>/tasks/<task>", endpoint="api_task", methods=READ),
        Rule("/api/pipelines/<pipeline>", endpoint="api_pipeline", methods=READ),
        Rule("/api/pipelines/<pipeline>/grid", endpoint="api_grid", methods=READ),
        Rule("/api/rejected", endpoint="api_rejected", methods=READ),
        Rule("/api/dead-letters", endpoint="api_dead_letters", methods=READ),
        Rule("/openapi.json", endpoint="openapi", methods=READ),
        Rule("/actions/<action>", endpoint="action", methods=["POST"]),
    ],
    strict_slashes=False,
)


def handle(request: Request, operate: bool = False) -> Response:
    """Answer one request; ``operate`` turns on the operator's actions."""
    ops, new_token = None, False
    if operate:
        token, new_token = csrf.token(request)
        ops = Ops(token)
    response = _route(request, ops)
    response.headers.update(SECURITY_HEADERS)  # on every response, the legacy JSON's included
    if request.path.startswith("/assets/") and response.status_code == 200:
        response.headers["Cache-Control"] = FOREVER
    if ops is not None and new_token and response.mimetype == "text/html":
        csrf.set_cookie(response, ops.token, request)
    return compressed(response, request)


def compressed(response: Response, request: Request) -> Response:
    """A page or JSON answer gzipped when the client accepts it and it is worth it (Cloud
    Functions send bodies as the function returns them)."""
    if (
        response.mimetype in ("text/html", "application/json")
        and "gzip" in request.headers.get("Accept-Encoding", "")
        and not response.direct_passthrough
        and len(response.get_data()) >= GZIP_OVER
    ):
        response.set_data(gzip.compress(response.get_data(), compresslevel=6))
        response.headers["Content-Encoding"] = "gzip"
        response.headers["Vary"] = "Accept-Encoding"
    return response


def _route(request: Request, ops: Ops | None) -> Response:
    adapter = ROUTES.bind_to_environ(request.environ)
    api = request.path.startswith("/api/") or request.path == "/openapi.json"
    try:
        limits.check_size(request)
        _check_text(request)
        endpoint, args = adapter.match()
        return VIEWS[str(endpoint)](request, ops, **args)
    except MethodNotAllowed as exc:
        response = _failure(exc, api, request, ops)
        response.headers["Allow"] = ", ".join(exc.valid_methods or ["GET", "HEAD"])
        return response
    except HTTPException as exc:
        return _failure(exc, api, request, ops)


def _failure(exc: HTTPException, api: bool, request: Request, ops: Ops | None) -> Response:
    code = exc.code or 500
    message = exc.description or exc.name
    if api:
        return json_response({"error": message}, code)
    return html_response(render.error_page(code, message, request.script_root, ops), code)


def json_response(payload: Any, status: int = 200) -> Response:
    body = json.dumps(payload, default=_json_default, sort_keys=True)
    return Response(body, status, {**SECURITY_HEADERS}, mimetype="application/json")


def html_response(body: str, status: int = 200) -> Response:
    return Response(body, status, {**SECURITY_HEADERS}, mimetype="text/html")


def _json_default(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _check_text(request: Request) -> None:
    """Refuse at once a path or query string holding what no name or database string can."""
    for text in (request.path, *(k + v for k, v in request.args.items(multi=True))):
        if problem := unstorable(text, "the path or query string"):
            raise BadRequest(problem)


def _known_shape(pipeline: str, batch_id: str | None = None) -> None:
    """404 without a query for names no batch or pipeline can have."""
    if batch_id is not None and not is_batch_id(batch_id):
        raise NotFound(f"no batch {batch_id!r} in pipeline {pipeline!r}")
    if not is_name(pipeline):
        raise NotFound(f"no pipeline {pipeline!r}")


def _limit(request: Request) -> int:
    raw = request.args.get("limit", str(DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}, not {raw!r}")
    return int(raw)


def _pipeline_arg(request: Request) -> str | None:
    return request.args.get("pipeline") or None


# -- views ------------------------------------------------------------------------------------


def index(request: Request, ops: Ops | None) -> Response:
    if "batch_id" in request.args:  # the status function's original JSON (README, CLI users)
        batch_id = request.args.get("batch_id")
        if batch_id and not is_batch_id(batch_id):
            return json_response({"error": f"no batch {batch_id!r}"}, 404)
        body, status, headers = status_response(batch_id, _pipeline_arg(request))
        return Response(body, status, headers)
    selected = _pipeline_arg(request)
    with read_only(get_engine()) as conn:
        data = model.batch_list(conn, selected, _limit(request))
        names = pipelines_shown(conn)
    return html_response(render.batches_page(data, names, selected, request.script_root, ops))


def _batch_detail(pipeline: str, batch_id: str) -> dict[str, Any]:
    _known_shape(pipeline, batch_id)
    with read_only(get_engine()) as conn:
        detail = model.batch_detail(conn, pipeline, batch_id)
    if detail is None:
        raise NotFound(f"no batch {batch_id!r} in pipeline {pipeline!r}")
    return detail


def batch(request: Request, ops: Ops | None, pipeline: str, batch_id: str) -> Response:
    detail = _batch_detail(pipeline, batch_id)
    return html_response(render.batch_page(detail, request.script_root, ops))


def gantt(request: Request, ops: Ops | None, pipeline: str, batch_id: str) -> Response:
    detail = _batch_detail(pipeline, batch_id)
    now = datetime.now(UTC)
    return html_response(pages.gantt_page(detail, request.script_root, now, ops))


def _task_detail(pipeline: str, batch_id: str, task: str) -> tuple[dict[str, Any], Any]:
    """The task's page data and its batch's key and status (for the live refresh)."""
    _known_shape(pipeline, batch_id)
    if not is_name(task):
        raise NotFound(f"no task {task!r} in pipeline {pipeline!r}")
    with read_only(get_engine()) as conn:
        status = batch_statuses(conn, pipeline, [batch_id]).get(batch_id)
        detail = model.task_detail(conn, pipeline, batch_id, task) if status else None
    if status is None:
        raise NotFound(f"no batch {batch_id!r} in pipeline {pipeline!r}")
    if detail is None:
        raise NotFound(f"no task {task!r} in pipeline {pipeline!r}")
    return detail, {"pipeline": pipeline, "batch_id": batch_id, "status": status}


def task(request: Request, ops: Ops | None, pipeline: str, batch_id: str, task: str) -> Response:
    detail, batch = _task_detail(pipeline, batch_id, task)
    return html_response(pages.task_page(detail, batch, request.script_root, ops))


def pipeline(request: Request, ops: Ops | None, pipeline: str) -> Response:
    _known_shape(pipeline)
    with read_only(get_engine()) as conn:
        detail = model.pipeline_detail(conn, pipeline, RECENT)
        grid = model.grid(conn, pipeline, RECENT)
    if detail is None:
        raise NotFound(f"no pipeline {pipeline!r}")
    return html_response(render.pipeline_page(detail, grid, request.script_root, ops))


def rejected(request: Request, ops: Ops | None) -> Response:
    limit = _limit(request)
    with read_only(get_engine()) as conn:
        data = model.rejected(conn, limit)
    return html_response(pages.rejected_page(data, request.script_root, ops))


def dead_letters(request: Request, ops: Ops | None) -> Response:
    limit = _limit(request)
    with read_only(get_engine()) as conn:
        data = model.dead_letters(conn, limit)
    return html_response(pages.dead_letters_page(data, request.script_root, ops))


def asset_graph(request: Request, ops: Ops | None) -> Response:
    """The asset graph across pipelines (``/assets/`` serves the page's static files)."""
    with read_only(get_engine()) as conn:
        found, waiting = store_assets.assets(conn), store_assets.schedules(conn)
    return html_response(pages.assets_page(found, waiting, request.script_root, ops))


def asset_file(request: Request, ops: Ops | None, name: str) -> Response:
    found = asset(name)
    if found is None:
        raise NotFound(f"no static file {name!r}")
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response = Response(found.gzipped, 200, mimetype=found.mimetype)
        response.headers["Content-Encoding"] = "gzip"
    else:
        response = Response(found.body, 200, mimetype=found.mimetype)
    response.headers["Vary"] = "Accept-Encoding"
    response.headers["ETag"] = f'"{found.version}"'
    return response


def api_batches(request: Request, ops: Ops | None) -> Response:
    limit = _limit(request)
    with read_only(get_engine()) as conn:
        return json_response(model.batch_list(conn, _pipeline_arg(request), limit))


def api_batch(request: Request, ops: Ops | None, pipeline: str, batch_id: str) -> Response:
    return json_response(_batch_detail(pipeline, batch_id))


def api_task(
    request: Request, ops: Ops | None, pipeline: str, batch_id: str, task: str
) -> Response:
    return json_response(_task_detail(pipeline, batch_id, task)[0])


def api_grid(request: Request, ops: Ops | None, pipeline: str) -> Response:
    _known_shape(pipeline)
    limit = _limit(request)
    with read_only(get_engine()) as conn:
        if not reads_pipeline_exists(conn, pipeline):
            raise NotFound(f"no pipeline {pipeline!r}")
        return json_response(model.grid(conn, pipeline, limit))


def api_rejected(request: Request, ops: Ops | None) -> Response:
    limit = _limit(request)
    with read_only(get_engine()) as conn:
        return json_response(model.rejected(conn, limit))


def api_dead_letters(request: Request, ops: Ops | None) -> Response:
    limit = _limit(request)
    with read_only(get_engine()) as conn:
        return json_response(model.dead_letters(conn, limit))


def api_pipeline(request: Request, ops: Ops | None, pipeline: str) -> Response:
    _known_shape(pipeline)
    limit = _limit(request)
    with read_only(get_engine()) as conn:
        detail = model.pipeline_detail(conn, pipeline, limit)
    if detail is None:
        raise NotFound(f"no pipeline {pipeline!r}")
    return json_response(detail)


def openapi(request: Request, ops: Ops | None) -> Response:
    return json_response(openapi_document())


@cache
def openapi_document() -> dict[str, Any]:
    """schema/openapi.json: the contract of the JSON API (a test holds the API to it)."""
    document: dict[str, Any] = json.loads(
        (schema_dir() / "openapi.json").read_text(encoding="utf-8")
    )
    return document


def action(request: Request, ops: Ops | None, action: str) -> Response:
    """An operator's action: refused on the read-only function, refused if it may come from
    another site, else the messages the CLI would publish, published."""
    if ops is None:
        raise Forbidden("this dashboard is read-only: actions are on the operator function")
    build = actions.ACTIONS.get(action)
    if build is None:
        raise NotFound(f"no action {action!r} (known: {', '.join(actions.ACTIONS)})")
    form = limits.form(request)
    if (problem := csrf.refusal(request, form.get(csrf.FIELD, ""))) is not None:
        raise Forbidden(problem)
    settings, base = get_settings(), request.script_root
    try:
        verify = identity.verifier(tuple(settings.id_token_audiences))
        who = identity.caller(request, settings.dashboard_caller, verify)
    except identity.Unauthenticated as exc:
        return html_response(render.error_page(401, str(exc), base, ops), 401)
    try:
        with read_only(get_engine()) as conn:
            messages = build(conn, form, who)
        publish.publish(messages)
    except actions.Refused as exc:
        return html_response(render.error_page(exc.status, exc.message, base, ops), exc.status)
    except publish.PublishFailed as exc:
        return html_response(render.error_page(exc.status, str(exc), base, ops), exc.status)
    except DagrelayError as exc:  # the publisher's client could not be made (settings)
        return html_response(render.error_page(503, str(exc), base, ops), 503)
    first = messages[0]
    back = url_for_batch(base, first["pipeline"], first["batch_id"])
    return html_response(pages.published_page(action, messages, back, base, ops))


def url_for_batch(base: str, pipeline: str, batch_id: str) -> str:
    return url(base, "batches", pipeline, batch_id)


def reads_pipeline_exists(conn: Any, pipeline: str) -> bool:
    return pipeline in pipelines_shown(conn)


VIEWS: dict[str, Callable[..., Response]] = {
    "index": index,
    "batch": batch,
    "gantt": gantt,
    "task": task,
    "pipeline": pipeline,
    "rejected": rejected,
    "dead_letters": dead_letters,
    "asset_graph": asset_graph,
    "asset": asset_file,
    "api_batches": api_batches,
    "api_batch": api_batch,
    "api_task": api_task,
    "api_pipeline": api_pipeline,
    "api_grid": api_grid,
    "api_rejected": api_rejected,
    "api_dead_letters": api_dead_letters,
    "openapi": openapi,
    "action": action,
}
