"""The object store behind a narrow interface: what ingestion reads, writes and moves. The real
implementation wraps google-cloud-storage's client (which honours ``STORAGE_EMULATOR_HOST``).

Every call is bounded: one HTTP request waits at most ``timeout_s`` (connect and between bytes),
and the client's retries of a failing request stop after ``retry_deadline_s``. Without them the
library retries a missing or unreadable object for about two minutes per call. Objects travel
through local files, never whole through memory.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from google.api_core.exceptions import NotFound

REQUEST_TIMEOUT_S = 30.0
RETRY_DEADLINE_S = 30.0
_HASH_BLOCK = 1 << 20


class ObjectGone(Exception):
    """The object (at that generation) no longer exists."""


@runtime_checkable
class ObjectStore(Protocol):
    def download(self, bucket: str, name: str, generation: int, dest: Path) -> None:
        """That generation of the object into the file ``dest``; ObjectGone if missing."""
        ...

    def upload(self, bucket: str, name: str, path: Path, content_type: str) -> None: ...

    def copy(self, bucket: str, name: str, generation: int, dest: str) -> None:
        """Copy that generation to ``dest`` in the same bucket; ObjectGone if missing."""
        ...

    def delete(self, bucket: str, name: str, generation: int) -> bool:
        """Delete that generation; False when it was already gone."""
        ...

    def exists(self, bucket: str, name: str) -> bool: ...


class GcsObjectStore:
    """google.cloud.storage.Client behind ObjectStore, every call bounded; one per process."""

    def __init__(
        self,
        client: Any,
        timeout_s: float = REQUEST_TIMEOUT_S,
        retry_deadline_s: float = RETRY_DEADLINE_S,
    ) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.retry_deadline_s = retry_deadline_s

    @property
    def bounds(self) -> dict[str, Any]:
        """The ``timeout`` and ``retry`` arguments of every call."""
        from google.cloud.storage.retry import DEFAULT_RETRY  # noqa: PLC0415 - on first use

        return {
            "timeout": self.timeout_s,
            "retry": DEFAULT_RETRY.with_deadline(self.retry_deadline_s),
        }

    def download(self, bucket: str, name: str, generation: int, dest: Path) -> None:
        blob = self.client.bucket(bucket).blob(name, generation=generation)
        try:
            blob.download_to_filename(str(dest), **self.bounds)
        except NotFound as exc:
            raise ObjectGone(f"gs://{bucket}/{name}#{generation} not found") from exc

    def upload(self, bucket: str, name: str, path: Path, content_type: str) -> None:
        blob = self.client.bucket(bucket).blob(name)
        blob.upload_from_filename(str(path), content_type=content_type, **self.bounds)

    def copy(self, bucket: str, name: str, generation: int, dest: str) -> None:
        source = self.client.bucket(bucket)
        try:
            source.copy_blob(
                source.blob(name), source, dest, source_generation=generation, **self.bounds
            )
        except NotFound as exc:
            raise ObjectGone(f"gs://{bucket}/{name}#{generation} not found") from exc

    def delete(self, bucket: str, name: str, generation: int) -> bool:
        blob = self.client.bucket(bucket).blob(name)
        try:
            blob.delete(if_generation_match=generation, **self.bounds)
        except NotFound:
            return False
        return True

    def exists(self, bucket: str, name: str) -> bool:
        return bool(self.client.bucket(bucket).blob(name).exists(**self.bounds))


def as_object_store(client: ObjectStore | Any) -> ObjectStore:
    """An ObjectStore as is; anything else is taken for a google.cloud.storage.Client."""
    return client if isinstance(client, ObjectStore) else GcsObjectStore(client)


def md5_of(path: Path) -> str:
    """The file's MD5 as GCS writes it (base64), read in blocks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        while block := stream.read(_HASH_BLOCK):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode()
