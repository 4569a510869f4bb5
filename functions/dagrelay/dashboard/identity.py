"""Who is asking: the email of the caller's Google-signed ID token, verified here, or the
configured default when no audience is configured (locally). README, "Security", says why.

Cloud Run's IAM check admits only callers with a valid ID token, but it does not tell the
function who they are: when a request carries ``X-Serverless-Authorization`` Cloud Run verifies
that header and passes ``Authorization`` through unverified, and no platform header names the
caller without IAP. So the function verifies the token itself with google-auth: the signature
against Google's published certificates (cached), the issuer, the audience (the
``id_token_audiences`` setting: the operator function's URLs) and the expiry; then it takes
the ``email`` claim only if Google verified it and it is a plain email address. Without
configured audiences no token is read at all, and the default is recorded."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from flask import Request

PREFIX = "dashboard:"
CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
CERTS_TTL_S = 3600.0
CLOCK_SKEW_S = 10
ISSUERS = ("accounts.google.com", "https://accounts.google.com")
MAX_EMAIL = 254
# A plain address: no spaces, quotes, angle brackets or control characters; a dotted domain.
EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
TOKEN_HEADERS = ("X-Serverless-Authorization", "Authorization")  # the one Cloud Run checked

FetchCerts = Callable[[], Mapping[str, str]]


class Unauthenticated(Exception):
    """The request's identity cannot be established (answered 401, with this reason)."""


def fetch_google_certs() -> Mapping[str, str]:
    """Google's current ID-token certificates ({key id: PEM})."""
    import google.auth.transport.requests  # noqa: PLC0415 - only the operator function needs it

    response = google.auth.transport.requests.Request()(CERTS_URL, method="GET", timeout=10)
    if response.status != 200:
        raise Unauthenticated(f"cannot fetch Google's certificates (HTTP {response.status})")
    certs: Mapping[str, str] = json.loads(response.data)
    return certs


class GoogleIdTokens:
    """Verifies Google-signed ID tokens for ``audiences``; the certificates are fetched by
    ``fetch_certs`` and kept ``CERTS_TTL_S`` (a test passes its own key's)."""

    def __init__(
        self,
        audiences: Sequence[str],
        fetch_certs: FetchCerts = fetch_google_certs,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.audiences = list(audiences)
        self._fetch, self._clock = fetch_certs, clock
        self._lock = threading.Lock()
        self._certs: Mapping[str, str] | None = None
        self._fetched_at = 0.0

    def claims(self, token: str) -> Mapping[str, Any]:
        """The token's claims once its signature, issuer, audience and expiry are checked."""
        from google.auth import exceptions, jwt  # noqa: PLC0415 - see fetch_google_certs

        try:
            claims: Mapping[str, Any] = jwt.decode(  # type: ignore[no-untyped-call]
                token,
                certs=self._current_certs(),
                audience=self.audiences,
                clock_skew_in_seconds=CLOCK_SKEW_S,
            )
        except (ValueError, exceptions.GoogleAuthError) as exc:
            raise Unauthenticated(f"the ID token is not valid: {str(exc)[:200]}") from None
        if claims.get("iss") not in ISSUERS:
            raise Unauthenticated(f"the ID token is not Google's (issuer {claims.get('iss')!r})")
        return claims

    def _current_certs(self) -> Mapping[str, str]:
        with self._lock:
            if self._certs is None or self._clock() - self._fetched_at > CERTS_TTL_S:
                self._certs, self._fetched_at = self._fetch(), self._clock()
            return self._certs


@lru_cache(maxsize=4)
def verifier(audiences: tuple[str, ...]) -> GoogleIdTokens | None:
    """The process's verifier for these audiences (its certificates cached); None: none set."""
    return GoogleIdTokens(audiences) if audiences else None


def bearer(request: Request) -> str | None:
    for header in TOKEN_HEADERS:
        value = request.headers.get(header, "")
        if value.startswith("Bearer ") and value[len("Bearer ") :].strip():
            return value[len("Bearer ") :].strip()
    return None


def checked_email(value: Any) -> str:
    """``value`` if it is a plain email address of at most MAX_EMAIL characters."""
    if not isinstance(value, str) or len(value) > MAX_EMAIL or not EMAIL.fullmatch(value):
        shown = value[:80] if isinstance(value, str) else type(value).__name__
        raise Unauthenticated(f"the ID token's email is not a plain email address: {shown!r}")
    return value


def caller(request: Request, default: str, verify: GoogleIdTokens | None) -> str:
    """``dashboard:<email>`` of the verified caller; ``dashboard:<default>`` when no audience
    is configured (``verify`` is None). ``Unauthenticated`` for a missing or bad token."""
    if verify is None:
        return PREFIX + default
    token = bearer(request)
    if token is None:
        raise Unauthenticated("no ID token (Authorization: Bearer ...) on the request")
    claims = verify.claims(token)
    if claims.get("email_verified") is not True:
        raise Unauthenticated("the ID token carries no email verified by Google")
    return PREFIX + checked_email(claims.get("email"))
