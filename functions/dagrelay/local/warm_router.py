"""functions-framework source for a local stack whose request timeout is shorter than a cold
start (the e2e test of work longer than the function timeout sets 2 s): ``functions/main.py``'s
router with its wiring and the ``cloudrun.job`` handler imported when the source loads, before
the server forks its worker and starts timing requests.

The stack serves this file instead of ``functions/main.py`` only when ``LOCAL_WARM_ROUTER`` is
set; a deployment never does."""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

import dagrelay.handlers.cloudrun  # noqa: F401 - imported now, not in the first timed request
from dagrelay.router.wiring import get_router


@functions_framework.cloud_event
def router(cloud_event: CloudEvent) -> None:
    """As ``functions/main.py``'s router: returning acknowledges; raising redelivers."""
    get_router().handle_push(cloud_event.get_data(), source=cloud_event["source"])
