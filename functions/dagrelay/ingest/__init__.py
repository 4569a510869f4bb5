"""Ingestion: a file dropped at ``gs://<inbox>/inbox/<source>/<name>`` becomes a batch of the
engine, so it gets the engine's retries, leases, deferred polling and dashboard.

1. The GCS notification reaches the router, which calls ``arrival.Ingestor``: another bucket or
   an unsafe name is recorded REJECTED in file_log and nothing else happens; otherwise the object
   is recorded RECEIVED and batch ``<name>.<generation>.<hash>`` of pipeline ``ingest.<source>``
   is started (both idempotent).
2. ``ingest.<source>`` is generated from the source (``pipeline``) and applied with
   ``pipelines.apply`` the first time a process sees the source; its tasks (``handlers``):
   ``validate`` (download to a temp file, check every row in bounded memory, then decide under a
   per-source lock: load, DUPLICATE of content already loaded, or REJECTED) -> ``convert``
   (Parquet under staging/) -> ``load`` (submits the BigQuery load job and defers; its poll
   marks the file LOADED) -> ``archive`` (raw file to archive/) -> ``trigger`` (starts a
   pipeline batch once all the sources of a month have arrived).
3. file_log is the ledger: (bucket, name, generation) is recorded once, its content (md5) is
   loaded once per source, and each file has at most one live load job (``load_job``).
"""

from __future__ import annotations

from dagrelay.ingest.arrival import Ingestor
from dagrelay.ingest.runtime import Runtime, install
from dagrelay.ingest.sources import Source, Sources, load_sources

__all__ = ["Ingestor", "Runtime", "Source", "Sources", "install", "load_sources"]
