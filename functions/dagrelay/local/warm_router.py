"""functions-framework source of the local stack's router: ``functions/main.py``'s own ``router``
function, with the router's wiring and the ``cloudrun.job`` handler imported when this file
loads — in the gunicorn master, before it forks its worker. So the worker's first push does not
pay for the import (the e2e test of work longer than the function timeout answers within 2 s,
shorter than a cold start under load), nor does a worker gunicorn forks again after one exited
(killed at a crash point, or past its timeout). Only modules are loaded here: the database pool,
the Pub/Sub client and their threads are built by the worker's first request (``get_router``).

A deployment serves ``functions/main.py`` itself, whose router imports its side on the first
call (the dashboard functions deploy from the same module)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import dagrelay.handlers.cloudrun  # imported now, not in the first timed request
import dagrelay.router.wiring  # noqa: F401 - what main.py's router imports on its first call
from dagrelay import resources


def main_router() -> Callable[..., Any]:
    """The ``router`` function of the installed ``main.py`` (resources.function_entry())."""
    path = resources.function_entry()
    spec = importlib.util.spec_from_file_location("main", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the function entry {path}")
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    entry: Callable[..., Any] = main.router
    return entry


router = main_router()
