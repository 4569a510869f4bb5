"""Who is asking: the email in the caller's ID token, or a configured default.

In GCP the operator function only admits callers whose ID token Cloud Run has already verified
against IAM (the function is not public), so its payload can be read without checking the
signature again. Locally there is no token and the default (``dashboard:local``) is used."""

from __future__ import annotations

import base64
import binascii
import json

from flask import Request

PREFIX = "dashboard:"


def token_email(authorization: str | None) -> str | None:
    """The ``email`` claim of a ``Bearer`` JWT, or None if there is no readable one."""
    if not authorization or not authorization.startswith("Bearer "):
        return None
    parts = authorization[len("Bearer ") :].split(".")
    if len(parts) != 3:
        return None
    body = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(body))
    except (binascii.Error, ValueError):
        return None
    email = claims.get("email") if isinstance(claims, dict) else None
    return email if isinstance(email, str) and email else None


def caller(request: Request, default: str) -> str:
    """``dashboard:<email>`` of the caller, or ``dashboard:<default>``."""
    return PREFIX + (token_email(request.headers.get("Authorization")) or default)
