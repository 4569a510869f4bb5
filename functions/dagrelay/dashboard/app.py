"""The read-only dashboard behind the HTTP ``status`` function: a werkzeug routing map, one
view per route, JSON for ``/api/*`` and HTML for the rest. Only GET (and HEAD); anything else
is 405. The legacy ``/?batch_id=`` JSON of the status function is kept as an alias."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from functools import cache
from typing import Any

from flask import Request, Response
from werkzeug.exceptions import BadRequest, HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule

from dagrelay.dashboard import model, render
from dagrelay.messages import unstorable
from dagrelay.names import is_batch_id, is_name
from dagrelay.resources import schema_dir
from dagrelay.store.db import get_engine
from dagrelay.store.reads import pipelines_shown, read_only, status_response

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
RECENT = 20
# Nothing may be fetched from anywhere: inline style only, no script, forms post back here.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
ROUTES = Map(
    [
        Rule("/", endpoint="index", methods=["GET"]),
        Rule("/batches/<pipeline>/<batch_id>", endpoint="batch", methods=["GET"]),
        Rule("/pipelines/<pipeline>", endpoint="pipeline", methods=["GET"]),
        Rule("/api/batches", endpoint="api_batches", methods=["GET"]),
        Rule("/api/batches/<pipeline>/<batch_id>", endpoint="api_batch", methods=["GET"]),
        Rule("/api/pipelines/<pipeline>", endpoint="api_pipeline", methods=["GET"]),
        Rule("/openapi.json", endpoint="openapi", methods=["GET"]),
    ],
    strict_slashes=False,
)


def handle(request: Request) -> Response:
    response = _route(request)
    response.headers.update(SECURITY_HEADERS)  # on every response, the legacy JSON's included
    return response


def _route(request: Request) -> Response:
    adapter = ROUTES.bind_to_environ(request.environ)
    api = request.path.startswith("/api/") or request.path == "/openapi.json"
    try:
        _check_text(request)
        endpoint, args = adapter.match()
        return VIEWS[str(endpoint)](request, **args)
    except MethodNotAllowed as exc:
        response = _failure(exc, api, request)
        response.headers["Allow"] = ", ".join(exc.valid_methods or ["GET", "HEAD"])
        return response
    except HTTPException as exc:
        return _failure(exc, api, request)


def _failure(exc: HTTPException, api: bool, request: Request) -> Response:
    code = exc.code or 500
    message = exc.description or exc.name
    if api:
        return json_response({"error": message}, code)
    return html_response(render.error_page(code, message, request.script_root), code)


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


def index(request: Request) -> Response:
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
    return html_response(render.batches_page(data, names, selected, request.script_root))


def batch(request: Request, pipeline: str, batch_id: str) -> Response:
    _known_shape(pipeline, batch_id)
    with read_only(get_engine()) as conn:
        detail = model.batch_detail(conn, pipeline, batch_id)
    if detail is None:
        raise NotFound(f"no batch {batch_id!r} in pipeline {pipeline!r}")
    return html_response(render.batch_page(detail, request.script_root))


def pipeline(request: Request, pipeline: str) -> Response:
    _known_shape(pipeline)
    with read_only(get_engine()) as conn:
        detail = model.pipeline_detail(conn, pipeline, RECENT)
    if detail is None:
        raise NotFound(f"no pipeline {pipeline!r}")
    return html_response(render.pipeline_page(detail, request.script_root))


def api_batches(request: Request) -> Response:
    limit = _limit(request)
    with read_only(get_engine()) as conn:
        return json_response(model.batch_list(conn, _pipeline_arg(request), limit))


def api_batch(request: Request, pipeline: str, batch_id: str) -> Response:
    _known_shape(pipeline, batch_id)
    with read_only(get_engine()) as conn:
        detail = model.batch_detail(conn, pipeline, batch_id)
    if detail is None:
        raise NotFound(f"no batch {batch_id!r} in pipeline {pipeline!r}")
    return json_response(detail)


def api_pipeline(request: Request, pipeline: str) -> Response:
    _known_shape(pipeline)
    limit = _limit(request)
    with read_only(get_engine()) as conn:
        detail = model.pipeline_detail(conn, pipeline, limit)
    if detail is None:
        raise NotFound(f"no pipeline {pipeline!r}")
    return json_response(detail)


def openapi(request: Request) -> Response:
    return json_response(openapi_document())


@cache
def openapi_document() -> dict[str, Any]:
    """schema/openapi.json: the contract of the JSON API (a test holds the API to it)."""
    document: dict[str, Any] = json.loads(
        (schema_dir() / "openapi.json").read_text(encoding="utf-8")
    )
    return document


VIEWS: dict[str, Callable[..., Response]] = {
    "index": index,
    "batch": batch,
    "pipeline": pipeline,
    "api_batches": api_batches,
    "api_batch": api_batch,
    "api_pipeline": api_pipeline,
    "openapi": openapi,
}
