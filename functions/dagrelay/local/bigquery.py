"""The local BigQuery: the ``bqemulator`` package (REST on 127.0.0.1, DuckDB inside), started
and stopped by PID like the rest of the stack.

It is an optional extra (``pip install 'dagrelay[local]'``), never a dependency of the deployed
function: the handlers reach it only because ``bigquery_endpoint`` points the real client at it.

Offline, bqemulator fails at start-up because it tries to download DuckDB's ``spatial``
extension. Run as ``python -m dagrelay.local.bigquery [start options]``, this module is the wrapper
that starts it without that load (no GEOGRAPHY then) and without the best-effort ``avro``
download. ``gs://bucket/path`` load URIs are read from ``<gcs_root>/bucket/path`` (bqemulator's
``BQEMU_GCS_LOCAL_ROOT``). ``gcs.start_storage_emulator(port, data_dir)`` keeps object
``gs://b/o`` at ``data_dir/b/o``, so passing the same ``data_dir`` as ``gcs_root`` makes an object
uploaded to the storage emulator the file a load job reads (checked by hand); tests that need no
storage emulator write their files under ``gcs_root`` directly.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import requests

from dagrelay.local import processes
from dagrelay.local.processes import ManagedProcess, StackError


@dataclass
class LocalBigQuery:
    """A running bqemulator: its REST endpoint, project, gs:// root and process."""

    endpoint: str
    project: str
    gcs_root: Path
    process: ManagedProcess

    def env(self) -> dict[str, str]:
        """The settings that point dagrelay's BigQuery client at this emulator."""
        return {
            "DAGRELAY_BIGQUERY_ENDPOINT": self.endpoint,
            "DAGRELAY_BIGQUERY_PROJECT": self.project,
        }

    def stop(self) -> None:
        self.process.stop()


def start(
    project: str,
    gcs_root: Path,
    workdir: Path,
    port: int = 0,
    timeout_s: float = 60.0,
) -> LocalBigQuery:
    """Start bqemulator on 127.0.0.1:``port`` (0: a free one) and wait until /readyz says so."""
    port = port or processes.free_port()
    gcs_root.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "dagrelay.local.bigquery",
        "start",
        "--rest-host=127.0.0.1",
        f"--rest-port={port}",
        "--grpc-host=127.0.0.1",
        f"--grpc-port={processes.free_port()}",
        f"--project={project}",
        "--ephemeral",
        "--log-format=console",
        "--log-level=warning",
    ]
    env = {
        **os.environ,
        "BQEMU_GCS_LOCAL_ROOT": str(gcs_root),
        "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false",
        "PYTHONUNBUFFERED": "1",
    }
    proc = processes.spawn("bqemulator", argv, workdir / f"bqemulator-{port}.log", env)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        processes.wait_for(lambda: _ready(endpoint) or not proc.alive(), timeout_s, "bqemulator")
    except StackError:
        proc.stop()
        raise
    if not proc.alive():
        raise StackError(f"bqemulator exited:\n{proc.log_tail()}")
    return LocalBigQuery(endpoint, project, gcs_root, proc)


def create_datasets(local: LocalBigQuery, datasets: Iterable[str]) -> None:
    """The datasets a deployment has (terraform/ creates them in GCP)."""
    from dagrelay.config import load_settings  # noqa: PLC0415
    from dagrelay.handlers.bigquery.client import make_client  # noqa: PLC0415 - the package's own client wiring

    settings = load_settings(
        project_id=local.project, bigquery_project=local.project, bigquery_endpoint=local.endpoint
    )
    with contextlib.closing(make_client(settings)) as client:
        for dataset in datasets:
            client.create_dataset(dataset, exists_ok=True, timeout=30)


def _ready(endpoint: str) -> bool:
    try:
        return requests.get(f"{endpoint}/readyz", timeout=0.5).ok
    except requests.RequestException:
        return False


def _serve() -> None:
    """bqemulator's CLI with DuckDB's spatial extension left unloaded (it cannot be downloaded
    offline; only GEOGRAPHY needs it)."""
    from bqemulator.cli import main  # noqa: PLC0415 - only the wrapper process needs it
    from bqemulator.storage.engine import DuckDBEngine  # noqa: PLC0415

    DuckDBEngine._load_spatial = lambda self: None  # type: ignore[method-assign]
    main(prog_name="bqemulator")


if __name__ == "__main__":
    _serve()
