"""Bounds on text dagrelay stores: every error, reason or traceback written into any table
(``task_log.error``, ``task_attempts.error``/``traceback``, ``file_log.error``,
``schedules.last_error``, ``outbox.last_error``, ``rejected_messages``/``dead_letters``
reason) goes through ``stored_error``, so an error quoting a huge input (a header of a million
columns, a whole message) costs a few KiB and still says how large it was."""

from __future__ import annotations

from dagrelay.messages import escaped

MAX_ERROR_CHARS = 4000


def stored_error(text: str, limit: int = MAX_ERROR_CHARS, *, keep_end: bool = False) -> str:
    """``text`` made storable (``messages.escaped``) and at most ``limit`` characters; a cut
    text keeps its start (its end with ``keep_end``, for a traceback) and names its size."""
    text = escaped(text)
    if len(text) <= limit:
        return text
    marker = f"[… cut: {len(text):,} characters in all]"
    kept = limit - len(marker) - 1
    if kept <= 0:
        return marker[:limit]
    return f"{marker} {text[-kept:]}" if keep_end else f"{text[:kept]} {marker}"


def stored_error_or_none(text: str | None, *, keep_end: bool = False) -> str | None:
    """``stored_error`` of a nullable column's value."""
    return None if text is None else stored_error(text, keep_end=keep_end)
