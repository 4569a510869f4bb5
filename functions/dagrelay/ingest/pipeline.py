"""The built-in ingestion pipeline of a source, ``ingest.<source>``, and the batch of one file.

    ingest.<source>.validate -> .convert -> .load -> .archive -> .trigger

Generated from the source (schema/sources.yaml) and written with ``pipelines.apply`` — the same
upsert as ``dagrelay pipeline apply``, so applying an unchanged spec changes nothing — the first
time a process ingests a file of that source. Task names carry the pipeline's name because a
task name is unique across pipelines.
"""

from __future__ import annotations

import hashlib
import re
import threading

from sqlalchemy import Engine as SqlEngine

from dagrelay.ingest.sources import Source
from dagrelay.pipelines.apply import apply
from dagrelay.pipelines.spec import PipelineSpec, PipelineTask

PREFIX = "ingest."
MAX_BATCH_ID = 128
STEPS = ("validate", "convert", "load", "archive", "trigger")
VALIDATE_TRIES = 3  # reading the object: after this many failed tries it is REJECTED
POLL_AFTER_S = 5.0

_applied: set[tuple[str, str]] = set()  # (database, spec) applied by this process
_lock = threading.Lock()


def pipeline_name(source: str) -> str:
    return f"{PREFIX}{source}"


def task_name(source: str, step: str) -> str:
    return f"{PREFIX}{source}.{step}"


def batch_id(bucket: str, name: str, generation: int) -> str:
    """``<base name>.<generation>.<hash>``: readable, unique per object generation (the hash of
    the exact bucket, name and generation), within the batch id rules (``[A-Za-z0-9_.:=+-]``,
    starting with a letter or digit, at most 128 characters)."""
    exact = f"{bucket}\x00{name}\x00{generation}".encode()
    tail = f".{generation}.{hashlib.sha256(exact).hexdigest()[:10]}"
    base = re.sub(r"[^A-Za-z0-9_.=+-]", "_", name.rsplit("/", 1)[-1])
    base = re.sub(r"^[^A-Za-z0-9]+", "", base) or "file"
    return base[: MAX_BATCH_ID - len(tail)] + tail


def spec(source: Source) -> PipelineSpec:
    params = {"source": source.name}
    step_params = {
        "validate": {**params, "tries": VALIDATE_TRIES},
        "load": {**params, "poll_after_s": POLL_AFTER_S},
    }
    tasks = tuple(
        PipelineTask(
            name=task_name(source.name, step),
            handler=f"ingest.{step}",
            params=step_params.get(step, params),
            parents=(task_name(source.name, STEPS[i - 1]),) if i else (),
            max_retries=VALIDATE_TRIES - 1,
            retry_delay_s=5,
            retry_max_delay_s=60,
            # the file is in: its source's asset is updated, for its month (the trigger's output)
            updates=(source.asset,) if step == "trigger" else (),
        )
        for i, step in enumerate(STEPS)
    )
    return PipelineSpec(
        pipeline=pipeline_name(source.name),
        tasks=tasks,
        description=f"Ingestion of {source.name} files into {source.target_table}",
        source=f"sources.yaml:{source.name}",
    )


def forget_applied() -> None:
    """Forget which databases ``ensure`` applied the pipelines to: for a process whose database
    is emptied under the same URL (the tests' shared database, reset between tests)."""
    with _lock:
        _applied.clear()


def ensure(db: SqlEngine, source: Source) -> None:
    """The source's pipeline exists as generated (applied once per process and spec)."""
    wanted = spec(source)
    key = (db.url.render_as_string(hide_password=True), repr(wanted))
    with _lock:
        if key in _applied:
            return
    with db.begin() as conn:
        apply(conn, wanted)
    with _lock:
        _applied.add(key)
