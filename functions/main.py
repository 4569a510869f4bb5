"""Cloud Functions entry points. Thin: decode the event, hand it to the router."""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent
from flask import Request

from dagrelay.app import get_router
from dagrelay.status import status_response


@functions_framework.cloud_event
def router(cloud_event: CloudEvent) -> None:
    """Pub/Sub-triggered: returning acknowledges; raising makes Pub/Sub redeliver."""
    get_router().handle_push(cloud_event.get_data(), source=cloud_event["source"])


@functions_framework.http
def status(request: Request) -> tuple[str, int, dict[str, str]]:
    """HTTP (IAM-authenticated): JSON status of a batch, ``?batch_id=...[&pipeline=...]``."""
    return status_response(request.args.get("batch_id"), request.args.get("pipeline"))
