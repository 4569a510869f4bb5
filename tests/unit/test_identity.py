"""The operator's identity: a Google-signed ID token verified (signature, issuer, audience,
expiry; a test key stands in for Google's, its certificate injected), a forged one refused,
and the email checked before it is recorded as triggered_by."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from flask import Request
from google.auth import crypt, jwt
from werkzeug.test import EnvironBuilder

from dagrelay.dashboard.identity import GoogleIdTokens, Unauthenticated, caller

AUDIENCE = "https://dagrelay-operate-123.europe-west1.run.app"
KEY_ID = "test-key"


def key_and_cert() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, cert.public_bytes(serialization.Encoding.PEM).decode()


GOOGLE_KEY, GOOGLE_CERT = key_and_cert()  # stands in for Google's signing key
OTHER_KEY, _ = key_and_cert()  # a forger's


def token(key: str = GOOGLE_KEY, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
        "email": "alice@example.com",
        "email_verified": True,
        **claims,
    }
    signer = crypt.RSASigner.from_string(key, KEY_ID)  # type: ignore[no-untyped-call]
    encoded: bytes = jwt.encode(signer, payload)  # type: ignore[no-untyped-call]
    return encoded.decode()


def request(bearer: str | None, header: str = "Authorization") -> Request:
    headers = [] if bearer is None else [(header, f"Bearer {bearer}")]
    return Request(EnvironBuilder(method="POST", headers=headers).get_environ())


@pytest.fixture
def verify() -> GoogleIdTokens:
    fetched: list[int] = []

    def fetch() -> dict[str, str]:
        fetched.append(1)
        assert len(fetched) == 1, "the certificates are cached"
        return {KEY_ID: GOOGLE_CERT}

    return GoogleIdTokens([AUDIENCE], fetch)


def test_a_valid_token_gives_its_verified_email(verify: GoogleIdTokens) -> None:
    assert caller(request(token()), "local", verify) == "dashboard:alice@example.com"
    # Cloud Run checks X-Serverless-Authorization first when present: so do we.
    both = Request(
        EnvironBuilder(
            method="POST",
            headers=[
                ("X-Serverless-Authorization", f"Bearer {token()}"),
                ("Authorization", f"Bearer {token(OTHER_KEY, email='ceo@corp.example')}"),
            ],
        ).get_environ()
    )
    assert caller(both, "local", verify) == "dashboard:alice@example.com"


def forged_unsigned() -> str:
    """The attack's token: any claims, a signature nobody checked."""
    claims = base64.urlsafe_b64encode(json.dumps({"email": "ceo@corp.example"}).encode())
    return f"e30.{claims.decode().rstrip('=')}.sig"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (forged_unsigned(), "the ID token is not valid"),
        (token(OTHER_KEY, email="ceo@corp.example"), "the ID token is not valid"),
        (token(aud="https://another-service.run.app"), "the ID token is not valid"),
        (token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200), "not valid"),
        (token(iss="https://evil.example"), "is not Google's"),
        (token(email_verified=False), "no email verified by Google"),
        (token(email="<b>x</b>@example.com"), "not a plain email address"),
        (token(email="ceo@corp.example\nAdmin: yes"), "not a plain email address"),
        (token(email="a" * 250 + "@example.com"), "not a plain email address"),
    ],
)
def test_a_bad_token_is_refused(verify: GoogleIdTokens, bad: str, reason: str) -> None:
    with pytest.raises(Unauthenticated, match=reason):
        caller(request(bad), "local", verify)


def test_a_missing_token_is_refused_when_audiences_are_set(verify: GoogleIdTokens) -> None:
    with pytest.raises(Unauthenticated, match="no ID token"):
        caller(request(None), "local", verify)


def test_without_audiences_no_token_is_read() -> None:
    """Locally: the configured default, whatever token the request carries."""
    assert caller(request(forged_unsigned()), "local", None) == "dashboard:local"
