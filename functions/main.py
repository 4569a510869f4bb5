"""Cloud Functions entry points. Thin: decode the event, hand it to the router or the dashboard.

All four functions (router, status, operate, deploy) deploy from this one module, so each
imports its side on its first call: the dashboard functions never load the router's wiring
(ingestion, the handlers; Pub/Sub only on an operator's first action), and the router does not
load the dashboard. ``python -m local_emulator.coldstart`` measures it.
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent
from flask import Request, Response


@functions_framework.cloud_event
def router(cloud_event: CloudEvent) -> None:
    """Pub/Sub-triggered: returning acknowledges; raising makes Pub/Sub redeliver."""
    from dagrelay.router.wiring import get_router  # noqa: PLC0415 - see the module docstring

    get_router().handle_push(cloud_event.get_data(), source=cloud_event["source"])


@functions_framework.http
def status(request: Request) -> Response:
    """HTTP (IAM-authenticated), read-only: the dashboard and its JSON API (GET only); the
    original JSON status of a batch stays at ``/?batch_id=...[&pipeline=...]``."""
    from dagrelay.dashboard import app as dashboard  # noqa: PLC0415 - see the module docstring

    return dashboard.handle(request)


@functions_framework.http
def operate(request: Request) -> Response:
    """HTTP (IAM-authenticated, operators only): the same dashboard with its actions (POSTs
    protected against cross-site requests) that publish what the CLI publishes."""
    from dagrelay.dashboard import app as dashboard  # noqa: PLC0415 - see the module docstring

    return dashboard.handle(request, operate=True)


@functions_framework.http
def deploy(request: Request) -> Response:
    """HTTP (IAM-authenticated, the deployer only): ``terraform apply`` calls it once per
    archive with the archive's hash; it migrates the database and applies every pipeline of
    the archive (dagrelay/ops/deploy.py), and answers the result as JSON."""
    from pathlib import Path  # noqa: PLC0415 - see the module docstring

    from dagrelay.ops import deploy as step  # noqa: PLC0415 - see the module docstring

    return step.handle(request, root=Path(__file__).resolve().parent)
