"""functions-framework source for the local stack's fault tests: ``functions/main.py``'s router,
built with the crash hooks that ``LOCAL_CRASH_POINTS`` arms (``dagrelay.local.crashes``).

The stack serves this file instead of ``functions/main.py`` only when that variable is set;
production wiring never installs hooks."""

from __future__ import annotations

from functools import cache

import functions_framework
from cloudevents.http import CloudEvent

from dagrelay.config import get_settings
from dagrelay.local.crashes import CrashInjector
from dagrelay.router.dispatch import Router
from dagrelay.router.wiring import build_router


@cache
def crash_armed_router() -> Router:
    """The router with the environment's crash hooks (none if the variable is unset)."""
    return build_router(get_settings(), hooks=CrashInjector.from_env())


@functions_framework.cloud_event
def router(cloud_event: CloudEvent) -> None:
    """As ``functions/main.py``'s router: returning acknowledges; raising redelivers."""
    crash_armed_router().handle_push(cloud_event.get_data(), source=cloud_event["source"])
