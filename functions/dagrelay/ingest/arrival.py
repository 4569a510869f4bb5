"""A GCS object-finalize notification, turned into the file's ingestion batch.

The router calls ``Ingestor`` for every notification. It refuses, recorded REJECTED in file_log
with the reason and without reading or moving anything, an object of another bucket than the
inbox, or with an unsafe name; it ignores objects outside ``inbox/`` (our own staging/, archive/,
rejected/ writes) and folder placeholders. Otherwise it records the object RECEIVED (once per
bucket, name and generation) and starts batch ``pipeline.batch_id(...)`` of ``ingest.<source>``,
both idempotent: a repeated notification, or one redelivered after a crash between the two,
starts nothing twice.
"""

from __future__ import annotations

import logging
from typing import Any

from dagrelay.ingest import filelog, pipeline
from dagrelay.ingest.runtime import Runtime
from dagrelay.ingest.sources import INBOX_PREFIX, match_object, unsafe_name
from dagrelay.messages import ObjectFinalized, StartBatch

log = logging.getLogger(__name__)


class Ingestor:
    """What the router calls for a GCS notification (dagrelay.router.dispatch.Ingest)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def __call__(self, notification: ObjectFinalized) -> str:
        rt, obj = self.rt, notification
        if obj.bucket != rt.inbox_bucket:
            return self.refuse(obj, f"bucket {obj.bucket!r} is not the inbox bucket")
        if not obj.name.startswith(INBOX_PREFIX) or obj.name.endswith("/"):
            log.info("object ignored: not a file under inbox/", extra=_extra(obj))
            return "ignored: not a file under inbox/"
        unsafe = unsafe_name(obj.name)
        if unsafe is not None:
            return self.refuse(obj, unsafe)
        match = match_object(obj.name, rt.sources)
        if match is None:
            return self.refuse(obj, "no source for this object (inbox/<source>/<file>)")
        source = match.source
        batch = pipeline.batch_id(obj.bucket, obj.name, obj.generation)
        pipeline.ensure(rt.db, source)
        values = {**_values(obj), "source": source.name, "target_table": source.target_table}
        with rt.db.begin() as conn:
            new = filelog.claim(conn, {**values, "batch_id": batch}, rt.clock()) is not None
            row = filelog.get(conn, bucket=obj.bucket, name=obj.name, generation=obj.generation)
        if row is not None and row.batch_id is None:  # refused on arrival, or from before
            return f"duplicate: {row.status.value}"
        rt.start_batch(
            StartBatch(
                pipeline=pipeline.pipeline_name(source.name),
                batch_id=batch,
                params={"bucket": obj.bucket, "name": obj.name, "generation": obj.generation},
                triggered_by=f"gcs:gs://{obj.bucket}/{obj.name}#{obj.generation}"[:200],
            )
        )
        log.info("file received" if new else "repeated notification", extra=_extra(obj))
        return "received" if new else "duplicate notification"

    def refuse(self, obj: ObjectFinalized, reason: str) -> str:
        log.warning("notification refused: %s", reason, extra=_extra(obj))
        with self.rt.db.begin() as conn:
            new = filelog.record_rejected(conn, _values(obj), reason, self.rt.clock())
        return f"rejected: {reason}" if new else "duplicate: REJECTED"


def _values(obj: ObjectFinalized) -> dict[str, Any]:
    size = str(obj.resource.get("size", ""))
    return {
        "bucket": obj.bucket,
        "name": obj.name,
        "generation": obj.generation,
        "md5": obj.resource.get("md5Hash"),
        "size_bytes": int(size) if size.isascii() and size.isdigit() else None,
        "source": None,
        "target_table": None,
    }


def _extra(obj: ObjectFinalized) -> dict[str, Any]:
    return {"action": "ingest", "object": f"gs://{obj.bucket}/{obj.name}#{obj.generation}"}
