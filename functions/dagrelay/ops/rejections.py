"""What a rejected message was, for a person: its stored data (the base64 data as delivered,
escaped and cut to its first 64 KiB) decoded to JSON when it is JSON, else a safe preview —
printable text, never control characters a terminal would obey. Pure functions."""

from __future__ import annotations

import base64
import binascii
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PREVIEW_CHARS = 200


@dataclass(frozen=True)
class Decoded:
    """``kind``: json (``text`` is compact JSON), text (not JSON), binary (not UTF-8; ``text``
    shows its bytes), not-base64 (``text`` is the stored data itself), empty."""

    kind: str
    text: str
    action: str | None  # the message's action: the data's, else the attribute's

    def preview(self, limit: int = PREVIEW_CHARS) -> str:
        return self.text if len(self.text) <= limit else self.text[: limit - 1] + "…"


def safe(text: str) -> str:
    """``text`` with every control or unprintable character written as an escape."""
    return "".join(
        c
        if c == " " or unicodedata.category(c)[0] not in "CZ"
        else c.encode("unicode_escape").decode()
        for c in text
    )


def decode(data: str | None, attributes: Mapping[str, str], payload_bytes: int) -> Decoded:
    """A stored rejection's data as a person should see it."""
    attribute_action = attributes.get("action")
    if not data:
        return Decoded("empty", "(no data)", attribute_action)
    cut = payload_bytes > len(data.encode("utf-8", "backslashreplace"))
    try:
        raw = base64.b64decode(_padded(data) if cut else data, validate=True)
    except (binascii.Error, ValueError):
        return Decoded("not-base64", safe(data), attribute_action)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Decoded("binary", safe(repr(raw)[2:-1]), attribute_action)
    value = _json(text)
    if value is _NOT_JSON:
        return Decoded("text", safe(text), attribute_action)
    action = value.get("action") if isinstance(value, dict) else None
    shown = json.dumps(value, ensure_ascii=True, separators=(", ", ": "))
    return Decoded("json", shown, action if isinstance(action, str) else attribute_action)


_NOT_JSON = object()


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _padded(data: str) -> str:
    """The longest decodable start of base64 cut mid-way (whole 4-character groups)."""
    return data[: len(data) - len(data) % 4]


def matches(decoded: Decoded, action: str | None) -> bool:
    return action is None or decoded.action == action
