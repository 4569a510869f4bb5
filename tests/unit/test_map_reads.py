"""A mapped task's gs:// list is streamed and bounded: reading stops at max_items + 1 items or
at the byte limit, whichever comes first, and the error names the limit and the size."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from dagrelay.engine import maps
from dagrelay.engine.maps import ListTooLarge, read_json_lines

LINE = json.dumps({"uri": "gs://b/" + "f" * 1000}) + "\n"  # about 1 KB a line


class CountingStream(io.BytesIO):
    """An object's bytes, counting how many were handed out."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.handed_out = 0

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        self.handed_out += len(chunk)
        return chunk


class FakeBlob:
    def __init__(self, data: bytes) -> None:
        self.size = len(data)
        self.stream = CountingStream(data)
        self.opened: dict[str, Any] = {}

    def open(self, mode: str, **kwargs: Any) -> CountingStream:
        self.opened = {"mode": mode, **kwargs}
        return self.stream


class FakeClient:
    """``client.bucket(b).get_blob(name)`` of google-cloud-storage, over one object."""

    def __init__(self, data: bytes | None) -> None:
        self.blob = None if data is None else FakeBlob(data)

    def bucket(self, name: str) -> FakeClient:
        return self

    def get_blob(self, name: str, **kwargs: Any) -> FakeBlob | None:
        return self.blob


def test_a_list_longer_than_max_items_is_read_only_to_the_item_past_the_limit() -> None:
    data = (LINE * 200_000).encode()  # 200 MB, 200,000 lines
    client = FakeClient(data)
    with pytest.raises(ListTooLarge) as refused:
        read_json_lines("gs://b/items.jsonl", 1024, client)
    assert client.blob is not None
    assert client.blob.opened["mode"] == "rb"
    # One chunk at most past the 1,025th line: a few MB, not 200.
    assert client.blob.stream.handed_out <= 1025 * len(LINE) + maps.READ_CHUNK_BYTES
    message = str(refused.value)
    expected = "has more than max_items (1,024) items: reading stopped at item 1,025 "
    assert message.startswith(expected)
    assert f"of {len(data):,} bytes read" in message


def test_a_list_over_the_byte_limit_is_refused_at_the_limit() -> None:
    data = b"[" + b"1," * 10_000_000 + b"1]\n"  # one line of 20 MB
    client = FakeClient(data)
    with pytest.raises(ListTooLarge) as refused:
        read_json_lines("gs://b/one.jsonl", 1_000_000, client, max_bytes=4 * 1024 * 1024)
    assert client.blob is not None
    assert client.blob.stream.handed_out == 4 * 1024 * 1024 + 1
    assert str(refused.value) == (
        f"is {len(data):,} bytes, more than the limit of 4,194,304 bytes for a list of items "
        "(reading stopped there)"
    )


def test_items_within_the_limits_are_read_whole() -> None:
    data = b'{"n": 1}\n\n2\r\n"three"'  # a blank line, CRLF, no newline at the end
    assert read_json_lines("gs://b/o", 3, FakeClient(data)) == [{"n": 1}, 2, "three"]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"1\n{oops\n", "gs://b/o line 2: not JSON"),
        (b"1\n\xff\n", "gs://b/o line 2: not JSON"),
    ],
)
def test_a_bad_line_is_named(data: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        read_json_lines("gs://b/o", 10, FakeClient(data))


def test_a_missing_object() -> None:
    with pytest.raises(FileNotFoundError, match="no object gs://b/o"):
        read_json_lines("gs://b/o", 10, FakeClient(None))
