"""The ingestion tasks (handlers ``ingest.validate``, ``ingest.convert``, ``ingest.load``,
``ingest.archive``, ``ingest.trigger``) of a file's batch; see ``dagrelay.ingest`` for the flow.

Each task reads the file's file_log row first and acts on its status, so a task that runs again
(a retry, a redelivery, a rerun, a worker killed half-way) picks up where the row says and never
repeats a step that counts: the content is decided once, the load has one recorded job at a
time, a move finds its copy already made. Nothing here waits for a BigQuery job.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagrelay.errors import BadMessage, DagrelayError, NonRetryableError
from dagrelay.handlers.registry import Deferred, HandlerContext, handler
from dagrelay.ingest import filelog, runtime
from dagrelay.ingest.filelog import Earlier, FileRow
from dagrelay.ingest.loader import LoadJob
from dagrelay.ingest.pipeline import POLL_AFTER_S
from dagrelay.ingest.rules import InvalidFile, month_from, month_of_name
from dagrelay.ingest.runtime import Runtime
from dagrelay.ingest.sources import OnReplace, Source, match_object
from dagrelay.ingest.storage import ObjectGone, md5_of
from dagrelay.messages import StartBatch
from dagrelay.states import FileStatus

log = logging.getLogger(__name__)

PARAMS: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "source": {"type": "string", "minLength": 1},
        "tries": {"type": "integer", "minimum": 1, "maximum": 20},
        "poll_after_s": {"type": "number", "minimum": 0, "maximum": 3600},
    },
    "required": ["source"],
    "additionalProperties": False,
}
PARQUET = "application/vnd.apache.parquet"


class LoadFailed(DagrelayError):
    """A load job failed in a way another job may get past; it loaded nothing."""


# -- where things go -------------------------------------------------------------------------------


def file_name(row: FileRow) -> str:
    """The path below inbox/<source>/."""
    return row.name.split("/", 2)[-1]


def staging_name(row: FileRow) -> str:
    return f"staging/{row.source}/{row.generation}/{file_name(row)}.parquet"


def moved_name(area: str, row: FileRow) -> str:
    """Where a raw file goes (``archive`` or ``rejected``); the generation keeps a re-sent file
    of the same name from overwriting the first."""
    return f"{area}/{row.source}/{row.generation}/{file_name(row)}"


def load_job_id(row: FileRow, source: Source, ctx: HandlerContext) -> str:
    """Unique per object generation and destination (job ids are unique per BigQuery project,
    which may outlive this database or be shared), and per attempt: a failed job is replaced
    by a new one, never reused."""
    exact = f"{row.uri}\x00{source.target_table}".encode()
    digest = hashlib.sha256(exact).hexdigest()[:16]
    return f"dagrelay_ingest_{row.source}_{digest}_{ctx.run_id}_{ctx.attempt}"


# -- the content decision (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    to: FileStatus  # VALIDATED (load it), DUPLICATE or REJECTED
    earlier: Earlier | None = None
    reason: str | None = None


def decide(source: Source, md5: str, earlier: Sequence[Earlier]) -> Verdict:
    """Load, skip as a duplicate, or refuse: the same content is never loaded twice for a
    source; other content under a name already loaded follows the source's ``on_replace``."""
    twin = next((e for e in earlier if e.md5 == md5), None)
    if twin is not None:
        reason = (
            f"same content as {twin.uri} (file {twin.file_id}), already loaded: not loaded again"
        )
        return Verdict(FileStatus.DUPLICATE, twin, reason)
    renamed = next((e for e in earlier if e.md5 != md5), None)
    if renamed is None or source.on_replace == "append":
        return Verdict(FileStatus.VALIDATED)
    return Verdict(FileStatus.REJECTED, renamed, _refusal(source, renamed, source.on_replace))


def _refusal(source: Source, earlier: Earlier, rule: OnReplace) -> str:
    return (
        f"{earlier.uri} (file {earlier.file_id}) was already loaded under this name with other"
        f" content; source {source.name} has on_replace: {rule}, so this file is not loaded."
        f" To correct the data, delete that file's rows from {source.target_table} and upload"
        " the file again under a new name"
    )


# -- the tasks -------------------------------------------------------------------------------------


def validate(ctx: HandlerContext) -> Mapping[str, Any]:
    """Read the object, check every row, and decide: load it, skip it as a duplicate, or
    reject it (invalid, unreadable, a refused replacement)."""
    rt, row, source = _file(ctx)
    if row.status == FileStatus.REJECTED:
        _settle_rejected(rt, row)
    if row.status != FileStatus.RECEIVED:
        return _summary(row)
    with tempfile.TemporaryDirectory(dir=rt.workdir) as tmp:
        local = _download(ctx, rt, row, Path(tmp))
        md5 = md5_of(local)
        try:
            from dagrelay.ingest.stream import scan  # noqa: PLC0415 - pyarrow, only here

            scanned = scan(local, source)
            month = month_from(source, file_name(row), set(scanned.months))
        except InvalidFile as exc:
            _reject(rt, row, exc.reason, move=True)
    with rt.db.begin() as conn:
        verdict = decide(source, md5, filelog.earlier_files(conn, row, md5))
        values: dict[str, Any] = {"md5": md5}
        if verdict.to == FileStatus.DUPLICATE:
            values |= {"duplicate_of": verdict.earlier.file_id if verdict.earlier else None}
        if verdict.to != FileStatus.VALIDATED:
            values["error"] = verdict.reason
        filelog.mark(conn, row, verdict.to, rt.clock(), **values)
    if verdict.to == FileStatus.REJECTED:
        _reject(rt, row, verdict.reason or "refused", move=True)
    return {"outcome": verdict.to.value, "rows": scanned.rows, "md5": md5, "month": month}


def convert(ctx: HandlerContext) -> Mapping[str, Any]:
    """Write the validated file as Parquet under staging/ (typed by the declared columns)."""
    rt, row, source = _file(ctx)
    if row.status != FileStatus.VALIDATED:
        return _summary(row)
    with tempfile.TemporaryDirectory(dir=rt.workdir) as tmp:
        local = _download(ctx, rt, row, Path(tmp))
        staged = Path(tmp) / "staged.parquet"
        from dagrelay.ingest.stream import scan  # noqa: PLC0415 - pyarrow, only here

        scanned = scan(local, source, parquet_out=staged)
        rt.store.upload(row.bucket, staging_name(row), staged, PARQUET)
    return {"staged": f"gs://{row.bucket}/{staging_name(row)}", "rows": scanned.rows}


def load(ctx: HandlerContext) -> Mapping[str, Any] | Deferred:
    """Submit the file's load job (one recorded job at a time) and defer to its poll."""
    rt, row, source = _file(ctx)
    if row.status != FileStatus.VALIDATED:
        return _summary(row)
    job = rt.loader.job(row.load_job) if row.load_job else None
    if job is not None and job.done and job.error is None:
        return _loaded(rt, row, job)
    job_id = row.load_job
    if job_id is None or (job is not None and job.done):  # none yet, or it failed: a new one
        job_id = load_job_id(row, source, ctx)
        with rt.db.begin() as conn:
            if not filelog.set_load_job(conn, row, job_id, row.load_job, rt.clock()):
                raise LoadFailed(f"the load job of {row.uri} changed meanwhile")
    if job is None or job.done:
        uri = f"gs://{row.bucket}/{staging_name(row)}"
        rt.loader.submit(job_id=job_id, uri=uri, table=source.target_table, columns=source.columns)
    return _defer(ctx, job_id)


def poll_load(ctx: HandlerContext, job: Mapping[str, Any]) -> Mapping[str, Any] | Deferred:
    rt, row, _source = _file(ctx)
    if row.status != FileStatus.VALIDATED:
        return _summary(row)
    found = rt.loader.job(str(job["job_id"]))
    if found is None:
        raise LoadFailed(f"BigQuery job {job['job_id']} is gone")
    if not found.done:
        return _defer(ctx, found.job_id)
    if found.error is not None and not found.retryable:
        _reject(rt, row, found.error, move=False)
    if found.error is not None:
        raise LoadFailed(found.error)
    return _loaded(rt, row, found)


def archive(ctx: HandlerContext) -> Mapping[str, Any]:
    """Move the raw file to archive/ (a loaded file, or a duplicate)."""
    rt, row, _source = _file(ctx)
    if row.status not in (FileStatus.LOADED, FileStatus.ARCHIVED, FileStatus.DUPLICATE):
        return _summary(row)
    dest = _move(rt, row, "archive")
    if row.status == FileStatus.LOADED:
        with rt.db.begin() as conn:
            filelog.mark(conn, row, FileStatus.ARCHIVED, rt.clock())
    return {**_summary(row), "archived": f"gs://{row.bucket}/{dest}"}


def trigger(ctx: HandlerContext) -> Mapping[str, Any]:
    """Start each trigger's batch for this file's month once every source it requires has a
    loaded file of that month. Runs after the file's LOADED commit, so of two files finishing
    together at least one sees both; start_batch is idempotent per (pipeline, batch id)."""
    rt, row, source = _file(ctx)
    month = month_of_name(source, file_name(row))
    if row.status not in (FileStatus.LOADED, FileStatus.ARCHIVED) or month is None:
        # no new rows (a duplicate, a refused file): its source's asset was not updated
        updated = row.status in (FileStatus.LOADED, FileStatus.ARCHIVED)
        return {**_summary(row), "started": [], "asset_updated": updated}
    started = []
    for each in source.triggers:
        needed = {source.name, *each.requires}
        with rt.db.connect() as conn:
            files = filelog.loaded_files(conn, sorted(needed))
        if {s for s, name in files if _month_of_file(rt, s, name) == month} != needed:
            continue
        message = StartBatch(each.pipeline, month, triggered_by=f"ingest:{row.uri}"[:200])
        try:
            rt.start_batch(message)
        except BadMessage as exc:  # e.g. the pipeline is not defined: the load still stands
            log.error("trigger failed: %s", exc.reason, extra={"pipeline": each.pipeline})  # noqa: TRY400
            continue
        started.append(f"{each.pipeline}/{month}")
    # the source's asset event takes the month as its partition (on_assets: "{partition}")
    return {"month": month, "started": started, "asset_partition": month}


# -- helpers ---------------------------------------------------------------------------------------


def _file(ctx: HandlerContext) -> tuple[Runtime, FileRow, Source]:
    rt = runtime.current()
    p = ctx.batch_params
    with rt.db.connect() as conn:
        row = filelog.get(
            conn, bucket=str(p["bucket"]), name=str(p["name"]), generation=int(p["generation"])
        )
    if row is None:
        raise NonRetryableError(f"batch {ctx.batch_id}: no file_log row for its object")
    source = rt.sources.get(row.source or "")
    if source is None:
        raise NonRetryableError(f"{row.uri}: source {row.source!r} is not in the sources file")
    return rt, row, source


def _summary(row: FileRow) -> dict[str, Any]:
    return {"file": row.uri, "status": row.status.value, "rows_loaded": row.rows_loaded}


def _download(ctx: HandlerContext, rt: Runtime, row: FileRow, tmp: Path) -> Path:
    """The object in a local file; REJECTED when it is gone, or still unreadable at the last
    of ``tries`` attempts (until then the failure is retried by the engine)."""
    local = tmp / "object"
    try:
        rt.store.download(row.bucket, row.name, row.generation, local)
    except ObjectGone:
        _reject(rt, row, f"{row.uri} does not exist (overwritten or deleted before it was read)")
    except Exception as exc:
        tries = int(ctx.params.get("tries", 1))
        if ctx.attempt >= tries:
            _reject(rt, row, f"{row.uri} could not be read in {tries} tries: {exc}"[:2000])
        raise
    return local


def _reject(rt: Runtime, row: FileRow, reason: str, *, move: bool = False) -> None:
    """Mark the row REJECTED (if it still can be), keep the raw file under rejected/, and fail
    the task for good with the reason."""
    with rt.db.begin() as conn:
        filelog.mark(conn, row, FileStatus.REJECTED, rt.clock(), error=reason)
    log.warning("file rejected: %s", reason, extra={"action": "ingest", "object": row.uri})
    if move:
        _move(rt, row, "rejected")
    raise InvalidFile(reason)


def _settle_rejected(rt: Runtime, row: FileRow) -> None:
    """A rejection whose task was interrupted: finish keeping the file, fail again."""
    if rt.store.exists(row.bucket, row.name):
        _move(rt, row, "rejected")
    raise InvalidFile(row.error or "rejected")


def _move(rt: Runtime, row: FileRow, area: str) -> str:
    """Copy the raw object to ``area`` and delete it from the inbox. When it is already gone
    (a move resumed after its delete), the copy made before must be there."""
    dest = moved_name(area, row)
    try:
        rt.store.copy(row.bucket, row.name, row.generation, dest)
    except ObjectGone:
        if not rt.store.exists(row.bucket, dest):
            raise
    rt.store.delete(row.bucket, row.name, row.generation)
    return dest


def _defer(ctx: HandlerContext, job_id: str) -> Deferred:
    return Deferred({"job_id": job_id}, float(ctx.params.get("poll_after_s", POLL_AFTER_S)))


def _loaded(rt: Runtime, row: FileRow, job: LoadJob) -> Mapping[str, Any]:
    with rt.db.begin() as conn:
        params = {"rows_loaded": job.rows, "load_job": job.job_id}
        filelog.mark(conn, row, FileStatus.LOADED, rt.clock(), **params)
    return {"file": row.uri, "job_id": job.job_id, "rows_loaded": job.rows}


def _month_of_file(rt: Runtime, source: str, name: str) -> str | None:
    match = match_object(name, rt.sources)
    if match is None or match.source.name != source:
        return None
    return month_of_name(match.source, match.file_name)


handler("ingest.validate", PARAMS)(validate)
handler("ingest.convert", PARAMS)(convert)
handler("ingest.load", PARAMS, poll=poll_load)(load)
handler("ingest.archive", PARAMS)(archive)
handler("ingest.trigger", PARAMS)(trigger)
