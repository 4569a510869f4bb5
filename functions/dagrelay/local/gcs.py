"""The local stand-in for Cloud Storage: ``gcp-storage-emulator`` (PyPI), started on 127.0.0.1
with a data directory and stopped by PID. The real google-cloud-storage client reaches it through
``STORAGE_EMULATOR_HOST``. The emulator sends no notifications: ``notify`` publishes what GCS
would publish to the events topic for an OBJECT_FINALIZE (JSON_API_V1 payload)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from dagrelay.local.processes import ManagedProcess, StackError, spawn, wait_for

# What GCS leaves out of the notification's object resource (the emulator adds an ACL list).
_NOT_IN_NOTIFICATIONS = ("acl", "owner")


def start_storage_emulator(port: int, data_dir: Path) -> ManagedProcess:
    """gcp-storage-emulator on 127.0.0.1:port keeping objects under ``data_dir``; waits until it
    answers. Stop it with ``.stop()`` (SIGTERM to its process group, by PID)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}.log"
    env = {**os.environ, "STORAGE_BASE": str(data_dir.parent), "STORAGE_DIR": data_dir.name}
    argv = [
        sys.executable,
        "-m",
        "gcp_storage_emulator",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = spawn("storage-emulator", argv, log_path, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url) or not proc.alive(), 30, "the storage emulator")
    except StackError:
        proc.stop()
        raise
    if not proc.alive():
        raise StackError(f"the storage emulator exited:\n{proc.log_tail()}")
    return proc


def _answers(url: str) -> bool:
    try:
        requests.get(f"{url}/storage/v1/b", timeout=0.5)
    except requests.RequestException:
        return False
    return True


def storage_client(project: str) -> Any:
    """A google.cloud.storage.Client; with STORAGE_EMULATOR_HOST set it talks to the emulator
    with anonymous credentials."""
    from google.auth.credentials import AnonymousCredentials  # noqa: PLC0415
    from google.cloud import storage  # type: ignore[attr-defined,import-untyped,unused-ignore]  # noqa: PLC0415

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client(project=project, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    return storage.Client(project=project)


def create_buckets(client: Any, names: Iterable[str]) -> None:
    """Create each bucket that does not exist yet."""
    for name in names:
        if client.lookup_bucket(name) is None:
            client.create_bucket(name)


def object_resource(emulator_host: str, bucket: str, name: str) -> dict[str, Any]:
    """The object's JSON API resource as the emulator stores it, trimmed to what GCS puts in a
    notification."""
    base = emulator_host if "://" in emulator_host else f"http://{emulator_host}"
    url = f"{base}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    resource: dict[str, Any] = response.json()
    for key in _NOT_IN_NOTIFICATIONS:
        resource.pop(key, None)
    return resource


def finalize_message(resource: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
    """(data, attributes) of the Pub/Sub message GCS publishes for an OBJECT_FINALIZE of this
    object resource with payload format JSON_API_V1."""
    bucket, name = str(resource["bucket"]), str(resource["name"])
    attributes = {
        "notificationConfig": f"projects/_/buckets/{bucket}/notificationConfigs/1",
        "eventType": "OBJECT_FINALIZE",
        "payloadFormat": "JSON_API_V1",
        "bucketId": bucket,
        "objectId": name,
        "objectGeneration": str(resource["generation"]),
        "eventTime": str(resource.get("updated") or resource.get("timeCreated")),
    }
    return json.dumps(dict(resource), indent=2).encode(), attributes


def notify(
    bucket: str, name: str, project: str, topic: str, *, emulator_host: str | None = None
) -> str:
    """Publish the OBJECT_FINALIZE notification GCS would send for gs://bucket/name (its current
    generation) to ``topic``; returns the message id. Needs PUBSUB_EMULATOR_HOST (or real
    credentials) for the publisher and the storage emulator's address."""
    from google.cloud import pubsub_v1  # noqa: PLC0415

    host = emulator_host or os.environ.get("STORAGE_EMULATOR_HOST")
    if not host:
        raise StackError("notify needs the storage emulator (STORAGE_EMULATOR_HOST)")
    data, attributes = finalize_message(object_resource(host, bucket, name))
    publisher = pubsub_v1.PublisherClient()
    future = publisher.publish(publisher.topic_path(project, topic), data, **attributes)
    return str(future.result(timeout=30))
