"""The object store behind a narrow interface: what ingestion reads, writes and moves. The real
implementation wraps google-cloud-storage's client (which honours ``STORAGE_EMULATOR_HOST``)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from google.api_core.exceptions import NotFound


class ObjectGone(Exception):
    """The object (at that generation) no longer exists."""


@runtime_checkable
class ObjectStore(Protocol):
    def read(self, bucket: str, name: str, generation: int | None = None) -> bytes:
        """The object's bytes (pinned to ``generation`` when given); ObjectGone if missing."""
        ...

    def write(self, bucket: str, name: str, data: bytes, content_type: str) -> None: ...

    def copy(self, bucket: str, name: str, generation: int, dest: str) -> None:
        """Copy that generation to ``dest`` in the same bucket; ObjectGone if missing."""
        ...

    def delete(self, bucket: str, name: str, generation: int) -> bool:
        """Delete that generation; False when it was already gone."""
        ...

    def exists(self, bucket: str, name: str) -> bool: ...


class GcsObjectStore:
    """google.cloud.storage.Client behind ObjectStore; one per process."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def read(self, bucket: str, name: str, generation: int | None = None) -> bytes:
        blob = self.client.bucket(bucket).blob(name, generation=generation)
        try:
            return bytes(blob.download_as_bytes())
        except NotFound as exc:
            raise ObjectGone(f"gs://{bucket}/{name}#{generation} not found") from exc

    def write(self, bucket: str, name: str, data: bytes, content_type: str) -> None:
        self.client.bucket(bucket).blob(name).upload_from_string(data, content_type=content_type)

    def copy(self, bucket: str, name: str, generation: int, dest: str) -> None:
        source = self.client.bucket(bucket)
        try:
            source.copy_blob(source.blob(name), source, dest, source_generation=generation)
        except NotFound as exc:
            raise ObjectGone(f"gs://{bucket}/{name}#{generation} not found") from exc

    def delete(self, bucket: str, name: str, generation: int) -> bool:
        try:
            self.client.bucket(bucket).blob(name).delete(if_generation_match=generation)
        except NotFound:
            return False
        return True

    def exists(self, bucket: str, name: str) -> bool:
        return bool(self.client.bucket(bucket).blob(name).exists())


def as_object_store(client: ObjectStore | Any) -> ObjectStore:
    """An ObjectStore as is; anything else is taken for a google.cloud.storage.Client."""
    return client if isinstance(client, ObjectStore) else GcsObjectStore(client)
