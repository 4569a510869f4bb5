"""Cross-site request protection of the dashboard's actions (POST only; GET never changes
anything). A POST must pass both checks:

- **same origin**: ``Sec-Fetch-Site`` (sent by every current browser) is ``same-origin``, or,
  without it, ``Origin`` names this host; a request with neither is refused;
- **double-submit token**: the form's ``csrf_token`` equals the ``dagrelay_csrf`` cookie that
  the page set (random, HttpOnly, SameSite=Strict). A page on another site can neither read
  the cookie nor set it, so it cannot forge the pair.
"""

from __future__ import annotations

import hmac
import re
import secrets
from urllib.parse import urlsplit

from flask import Request, Response

COOKIE = "dagrelay_csrf"
FIELD = "csrf_token"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


def token(request: Request) -> tuple[str, bool]:
    """The request's token (its cookie), or a new one; True when it is new (set the cookie)."""
    current = request.cookies.get(COOKIE, "")
    if _TOKEN.fullmatch(current):
        return current, False
    return secrets.token_urlsafe(32), True


def set_cookie(response: Response, value: str, request: Request) -> None:
    secure = request.is_secure or request.headers.get("X-Forwarded-Proto") == "https"
    response.set_cookie(
        COOKIE,
        value,
        path=(request.script_root or "") + "/",
        secure=secure,
        httponly=True,
        samesite="Strict",
    )


def refusal(request: Request, sent: str) -> str | None:
    """Why this POST (whose form carries the token ``sent``) is refused as possibly
    cross-site, or None if it is ours."""
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if site is not None and site != "same-origin":
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    if origin is not None and urlsplit(origin).netloc != request.host:
        return f"cross-site request refused (Origin {origin} is not this dashboard)"
    if site is None and origin is None:
        return "request refused: it carries neither Origin nor Sec-Fetch-Site"
    cookie = request.cookies.get(COOKIE, "")
    if not _TOKEN.fullmatch(cookie) or not hmac.compare_digest(cookie, sent):
        return "request refused: the form's CSRF token is missing or does not match"
    return None
