"""``sensor.gcs``: waits until an object (``object``) or any object under a prefix (``prefix``)
exists in a bucket, optionally updated after ``newer_than`` (an ISO time; placeholders resolve,
e.g. ``"{scheduled_for}"`` for a scheduled batch's tick, or a batch param such as
``"{interval_start}"``). Its output names the object found::

    - name: wait_for_export
      handler: sensor.gcs
      params: {bucket: acme-exports, prefix: "crm/{batch_id}/", poke_interval_s: 300,
               timeout_s: 21600, on_timeout: skip}
"""

from __future__ import annotations

import os
from datetime import datetime
from functools import cache
from typing import Any, Self

from pydantic import Field, model_validator

from dagrelay.handlers.registry import HandlerContext, handler
from dagrelay.handlers.sensors import wait

MAX_LISTED = 1000  # objects looked at per poke under a prefix (the first match ends the poke)
REQUEST_TIMEOUT_S = 30.0


class GcsParams(wait.SensorParams):
    bucket: str = Field(min_length=3, max_length=222)
    object: str | None = Field(None, min_length=1, description="An object's exact name.")
    prefix: str | None = Field(None, min_length=1, description="Any object under this prefix.")
    newer_than: datetime | None = Field(
        None, description="Only an object updated after this time counts (ISO 8601, with zone)."
    )

    @model_validator(mode="after")
    def one_target(self) -> Self:
        if (self.object is None) == (self.prefix is None):
            raise ValueError("give exactly one of object or prefix")
        if self.newer_than is not None and self.newer_than.tzinfo is None:
            raise ValueError("newer_than needs a time zone (e.g. 2024-03-01T00:00:00+00:00)")
        return self


def awaited(params: GcsParams) -> str:
    what = f"gs://{params.bucket}/{params.object or params.prefix}"
    what += "" if params.object else "*"
    return what + (f" newer than {params.newer_than.isoformat()}" if params.newer_than else "")


@cache
def _client() -> Any:
    """The process's storage client; against the emulator (``STORAGE_EMULATOR_HOST``) with
    anonymous credentials."""
    from google.auth.credentials import AnonymousCredentials  # noqa: PLC0415 - on first use
    from google.cloud import storage  # noqa: PLC0415 - on first use

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client(project="local", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    return storage.Client()


def find(params: GcsParams, client: Any = None) -> wait.Found:
    """The object that satisfies the sensor, as its output; None if there is none yet."""
    client = client or _client()
    bucket = client.bucket(params.bucket)
    if params.object is not None:
        blobs = [bucket.get_blob(params.object, timeout=REQUEST_TIMEOUT_S)]
    else:
        blobs = client.list_blobs(
            params.bucket,
            prefix=params.prefix,
            max_results=MAX_LISTED,
            timeout=REQUEST_TIMEOUT_S,
        )
    for blob in blobs:
        if blob is None:
            continue
        updated = blob.updated
        if params.newer_than is not None and (updated is None or updated <= params.newer_than):
            continue
        return {
            "bucket": params.bucket,
            "object": blob.name,
            "generation": int(blob.generation or 0),
            "updated": updated.isoformat() if updated else None,
        }
    return None


def _poll(ctx: HandlerContext[GcsParams], job: Any) -> Any:
    return wait.poke(ctx, ctx.params, job, find(ctx.params))


@handler("sensor.gcs", params=GcsParams, poll=_poll)
def gcs_sensor(ctx: HandlerContext[GcsParams]) -> Any:
    """Wait for an object, or any object under a prefix, in a bucket."""
    return wait.start(ctx, ctx.params, awaited(ctx.params), lambda: find(ctx.params))
