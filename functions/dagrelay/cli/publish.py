"""One message to a Pub/Sub topic, confirmed: how ``trigger`` and ``backfill`` publish.

Through Pub/Sub's REST API (``POST v1/projects/P/topics/T:publish``) with the standard library's
HTTP client. The google-cloud-pubsub client costs ~0.5 s of CPU to import (gRPC and its proto
types), half of trigger's budget (issue 19), for one message per command; the router and the
outbox relay keep it (``dagrelay.pubsub``: batching, many messages, a long-lived process).

Like the Google clients, it honours ``PUBSUB_EMULATOR_HOST`` (plain HTTP to that host, no
credentials); otherwise it calls pubsub.googleapis.com with Application Default Credentials
(google-auth). Like the client's publish, it retries what may pass (HTTP 429 and 5xx, a lost
connection, a timeout) with backoff until its deadline; the message id Pub/Sub answers is the
confirmation. Anything else is a DagrelayError naming the topic."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from dagrelay.errors import DagrelayError

ENDPOINT = "https://pubsub.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/pubsub"
PUBLISH_TIMEOUT_S = 60.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
FIRST_DELAY_S = 0.1
MAX_DELAY_S = 2.0

Send = Callable[[str, bytes, dict[str, str], float], Any]


class Transient(Exception):
    """A failure another try may fix."""


def topic_path(project_id: str, topic_id: str) -> str:
    return f"projects/{project_id}/topics/{topic_id}"


def endpoint() -> tuple[str, bool]:
    """(base URL, whether requests need credentials): the emulator's when one is set."""
    emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    return (f"http://{emulator}", False) if emulator else (ENDPOINT, True)


def publish(
    project_id: str,
    topic_id: str,
    data: bytes,
    attributes: Mapping[str, str],
    *,
    timeout_s: float = PUBLISH_TIMEOUT_S,
    send: Send | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Publish one message and wait until Pub/Sub accepted it; returns its message id."""
    topic = topic_path(project_id, topic_id)
    base, authorised = endpoint()
    url = f"{base}/v1/{topic}:publish"
    message = {"data": base64.b64encode(data).decode("ascii"), "attributes": dict(attributes)}
    body = json.dumps({"messages": [message]}).encode()
    post = send or _post
    deadline = clock() + timeout_s
    delay = FIRST_DELAY_S
    while True:
        try:
            headers = {"Content-Type": "application/json"}
            if authorised:
                headers.update(_credentials(url))
            answer = post(url, body, headers, max(deadline - clock(), 0.1))
            return str(answer["messageIds"][0])
        except Transient as exc:
            if clock() + delay > deadline:
                raise DagrelayError(f"publishing to {topic} failed: {exc}") from exc
            sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
        except (DagrelayError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise DagrelayError(f"publishing to {topic} failed: {exc}") from exc


def _post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Any:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - http(s) only: endpoint()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        said = f"HTTP {exc.code}: {_error_message(exc)}"
        if exc.code in RETRY_STATUSES:
            raise Transient(said) from exc
        raise DagrelayError(said) from exc
    except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out
        raise Transient(str(exc)) from exc


def _error_message(exc: urllib.error.HTTPError) -> str:
    """Google's error body (``{"error": {"message": ...}}``), else the HTTP reason."""
    try:
        return str(json.loads(exc.read())["error"]["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return str(exc.reason)


def _credentials(url: str) -> dict[str, str]:
    """The Authorization (and quota project) headers of Application Default Credentials."""
    import google.auth
    import google.auth.exceptions
    import google.auth.transport.urllib3
    import urllib3

    headers: dict[str, str] = {}
    try:
        credentials, _ = google.auth.default(scopes=[SCOPE])
        request = google.auth.transport.urllib3.Request(urllib3.PoolManager())  # type: ignore[no-untyped-call]
        credentials.before_request(request, "POST", url, headers)  # type: ignore[no-untyped-call]
    except google.auth.exceptions.TransportError as exc:
        raise Transient(str(exc)) from exc
    except google.auth.exceptions.GoogleAuthError as exc:
        raise DagrelayError(f"no credentials for Pub/Sub: {exc}") from exc
    return headers
