"""The deploy step: what ``terraform apply`` runs inside GCP once per function archive
(terraform/deploy.tf calls the ``deploy`` function with the archive's hash and waits).

1. The hash asked for must be the one this function was deployed with (``archive_hash``): a
   request that reaches an older revision is refused (409) and retried by the caller.
2. One step at a time (a session advisory lock). A database that already records this hash is
   left alone: a re-run is a no-op.
3. Migrate to head, then apply every pipeline file of the archive's ``pipelines/`` folder —
   found, not listed: a file added to the project is applied — and record the hash, in one
   transaction: a pipeline that fails names its file, and nothing of the pipelines or the
   record is written.

Each applied archive is a row of ``deploys`` (migration 0022: its hash, the schema revision it
left, when, what each file applied); the newest row is the one compared (ARCHITECTURE.md,
"Deploy"), so a rollback to an older archive is applied again.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Request, Response
from sqlalchemy import Connection, Engine, text

from dagrelay.errors import ConfigError, DagrelayError, PipelineError
from dagrelay.pipelines.apply import apply
from dagrelay.pipelines.sources import YAML_SUFFIXES, load_specs
from dagrelay.pipelines.spec import PipelineSpec
from dagrelay.pipelines.validate import registered_handlers, validate
from dagrelay.store import migrate

log = logging.getLogger(__name__)

PIPELINES_DIR = "pipelines"
# What terraform passes: the archive's md5 (hex); any short token of these characters works.
ARCHIVE_HASH = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
LOCK_KEY = 0x6461_6772_6465_706C  # "dagrdepl": one deploy step at a time per database


class DeployRefused(DagrelayError):
    """The request names another archive than the one this function runs (HTTP 409)."""


class DeployFailed(DagrelayError):
    """A pipeline file could not be applied: ``file`` (relative to the archive) and why."""

    def __init__(self, file: str, problems: list[str]) -> None:
        super().__init__(f"{file}: {'; '.join(problems)}")
        self.file = file
        self.problems = problems


@dataclass(frozen=True)
class DeployResult:
    archive: str
    status: str  # "applied" or "unchanged"
    revision: str
    pipelines: dict[str, list[str]] = field(default_factory=dict)  # file -> one line per pipeline

    def as_json(self) -> dict[str, Any]:
        return {
            "archive": self.archive,
            "status": self.status,
            "revision": self.revision,
            "pipelines": self.pipelines,
        }


def pipeline_files(root: Path) -> list[Path]:
    """Every pipeline file under ``root/pipelines``: YAML files and Python modules (not
    ``__init__.py``), sorted, hidden files and caches aside."""
    folder = root / PIPELINES_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.rglob("*")):
        inside = path.relative_to(folder).parts
        if any(p.startswith(".") or p == "__pycache__" for p in inside) or not path.is_file():
            continue
        if path.suffix in YAML_SUFFIXES or (path.suffix == ".py" and path.name != "__init__.py"):
            found.append(path)
    return found


def check_archive(asked: object, deployed: str | None) -> str:
    """The archive hash of a request, checked against the one this function runs."""
    if not isinstance(asked, str) or not ARCHIVE_HASH.fullmatch(asked):
        raise ConfigError('the request must be JSON {"archive": "<hash of the function archive>"}')
    if deployed is not None and asked != deployed:
        raise DeployRefused(
            f"this function runs archive {deployed}, the request names {asked}: "
            "the new revision is not serving yet (retry), or the hash is wrong"
        )
    return asked


def run(
    engine: Engine, root: Path, archive: str, now: Callable[[], datetime] | None = None
) -> DeployResult:
    """Migrate ``engine``'s database to head and apply every pipeline of ``root``, once per
    ``archive`` (see the module docstring)."""
    with _deploy_lock(engine):
        with engine.connect() as conn:
            recorded = _recorded(conn)
        if recorded is not None and recorded.get("archive") == archive:
            log.info("deploy: archive already applied", extra={"archive": archive})
            return DeployResult(archive, "unchanged", str(recorded.get("revision")))
        migrate.upgrade(engine)
        specs = _load(root)
        revision = migrate.current(engine) or "base"
        with engine.begin() as conn:
            applied = {file: _apply_file(conn, file, found) for file, found in specs.items()}
            _record(conn, archive, revision, (now or _utcnow)(), applied)
    log.info("deploy: archive applied", extra={"archive": archive, "revision": revision})
    return DeployResult(archive, "applied", revision, applied)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _deploy_lock(engine: Engine) -> Iterator[None]:
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
            conn.commit()


def _load(root: Path) -> dict[str, list[PipelineSpec]]:
    """{file relative to root: its specs}, each validated; the first file that fails is named."""
    specs: dict[str, list[PipelineSpec]] = {}
    for path in pipeline_files(root):
        name = path.relative_to(root).as_posix()
        try:
            specs[name] = load_specs(path)
        except PipelineError as exc:
            raise DeployFailed(name, exc.problems) from exc
    try:
        handlers = registered_handlers()
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise DeployFailed("handler modules (dagrelay.yaml)", [reason]) from exc
    for name, found in specs.items():
        for spec in found:
            try:
                validate(spec, handlers)
            except PipelineError as exc:
                raise DeployFailed(name, exc.problems) from exc
    return specs


def _apply_file(conn: Connection, file: str, specs: list[PipelineSpec]) -> list[str]:
    lines = []
    for spec in specs:
        try:
            result = apply(conn, spec)
        except PipelineError as exc:
            raise DeployFailed(file, exc.problems) from exc
        lines.append(f"pipeline {spec.pipeline}: {result}")
    return lines


def _recorded(conn: Connection) -> dict[str, Any] | None:
    """The newest deploy recorded; None before the first (or before migration 0022)."""
    if conn.execute(text("SELECT to_regclass('deploys')")).scalar() is None:
        return None
    row = (
        conn.execute(text("SELECT archive, revision FROM deploys ORDER BY deploy_id DESC LIMIT 1"))
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def _record(
    conn: Connection, archive: str, revision: str, at: datetime, applied: dict[str, list[str]]
) -> None:
    written = conn.execute(
        text(
            "INSERT INTO deploys (archive, revision, applied_at, applied) "
            "VALUES (:archive, :revision, :at, CAST(:applied AS jsonb)) RETURNING deploy_id"
        ),
        {"archive": archive, "revision": revision, "at": at, "applied": json.dumps(applied)},
    ).first()
    if written is None:  # an INSERT returns its row or raises: nothing else may happen here
        raise RuntimeError(f"deploy: the record of archive {archive} was not written")


def handle(request: Request, root: Path) -> Response:
    """The ``deploy`` function: POST ``{"archive": HASH}`` -> 200 with the result, 400 for a
    bad request, 409 for another archive, 500 naming the pipeline file that failed."""
    from dagrelay.config import get_settings  # noqa: PLC0415 - settings once per call
    from dagrelay.store.db import get_engine  # noqa: PLC0415

    if request.method != "POST":
        return _answer(405, {"error": 'POST {"archive": HASH}'})
    body = request.get_json(silent=True)
    asked = body.get("archive") if isinstance(body, dict) else None
    try:
        archive = check_archive(asked, get_settings().archive_hash)
    except DeployRefused as exc:
        return _answer(409, {"error": str(exc)})
    except ConfigError as exc:
        return _answer(400, {"error": str(exc)})
    try:
        result = run(get_engine(), root, archive)
    except DeployFailed as exc:
        log.error("deploy failed: %s", exc, extra={"archive": archive, "file": exc.file})  # noqa: TRY400 - the problems are the record, not the traceback
        return _answer(500, {"error": str(exc), "file": exc.file, "problems": exc.problems})
    except Exception as exc:
        log.exception("deploy failed", extra={"archive": archive})
        return _answer(500, {"error": f"{type(exc).__name__}: {exc}"})
    return _answer(200, result.as_json())


def _answer(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body, sort_keys=True), status, mimetype="application/json")
