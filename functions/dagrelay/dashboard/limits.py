"""What the dashboard's functions accept from a request, checked before anything is parsed: the
body's size (413 naming the limit and the size), an action's form as our pages send it
(``application/x-www-form-urlencoded``, else 415), strictly UTF-8, without NUL (400). Params
nested too deep or holding numbers JSON cannot (1e999) are refused when they are read
(``actions``, with the router's ``messages.loads``). Every refusal an input causes is 4xx."""

from __future__ import annotations

from urllib.parse import parse_qsl

from flask import Request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, UnsupportedMediaType

from dagrelay.messages import MAX_DATA_BYTES, unstorable

# A form holds at most one message (MAX_DATA_BYTES) and percent-encoding may double it.
MAX_BODY_BYTES = 2 * MAX_DATA_BYTES
MAX_FIELDS = 50
FORM = "application/x-www-form-urlencoded"


def check_size(request: Request) -> None:
    """413 for a body announced larger than the limit (nothing of it is read)."""
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise RequestEntityTooLarge(_too_large(f"{length} bytes"))


def _too_large(size: str) -> str:
    return f"the request body is {size}; the limit is {MAX_BODY_BYTES} bytes"


def form(request: Request) -> dict[str, str]:
    """An action's form, read within the limit and decoded strictly (the first value of a
    field that comes twice)."""
    if request.mimetype != FORM:
        shown = request.mimetype or "none"
        raise UnsupportedMediaType(f"an action is a form sent as {FORM}, not {shown}")
    check_size(request)
    body = request.stream.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise RequestEntityTooLarge(_too_large(f"more than {MAX_BODY_BYTES} bytes"))
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the form is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:  # more fields than MAX_FIELDS
        raise BadRequest(
            f"the form has too many fields (the limit is {MAX_FIELDS}): {exc}"
        ) from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        fields.setdefault(key, value)
    if problem := unstorable(fields, "the form"):
        raise BadRequest(problem)
    return fields
