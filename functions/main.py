"""Cloud Functions entry points. Thin: decode the event, hand it to the router."""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent
from flask import Request, Response

from dagrelay.dashboard import app as dashboard
from dagrelay.router.wiring import get_router


@functions_framework.cloud_event
def router(cloud_event: CloudEvent) -> None:
    """Pub/Sub-triggered: returning acknowledges; raising makes Pub/Sub redeliver."""
    get_router().handle_push(cloud_event.get_data(), source=cloud_event["source"])


@functions_framework.http
def status(request: Request) -> Response:
    """HTTP (IAM-authenticated), read-only: the dashboard and its JSON API (GET only); the
    original JSON status of a batch stays at ``/?batch_id=...[&pipeline=...]``."""
    return dashboard.handle(request)
