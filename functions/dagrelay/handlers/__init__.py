"""Handlers: the work a task does, registered by name. See ``registry`` and ``builtin``."""

from __future__ import annotations

from dagrelay.handlers.registry import (
    Deferred,
    Handler,
    HandlerContext,
    Poll,
    Registration,
    default_registry,
    handler,
)

__all__ = [
    "Deferred",
    "Handler",
    "HandlerContext",
    "Poll",
    "Registration",
    "default_registry",
    "handler",
]
