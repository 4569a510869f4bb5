"""Engine hooks: named points on a task's path where something outside the engine may act.
Production installs none (``NO_HOOKS``); tests and the local stack install crash injection
(``dagrelay.local.crashes``) to prove that a crash at any point loses nothing and does nothing
twice."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol


class HookPoint(StrEnum):
    AFTER_CLAIM = "after_claim"  # the claim committed; the handler has not started
    IN_HANDLER = "in_handler"  # the handler is running
    AFTER_HANDLER = "after_handler"  # the handler returned; its result is not committed
    AFTER_COMMIT = "after_commit"  # the result and the children are committed; nothing published


class EngineHooks(Protocol):
    def at(self, point: HookPoint, task: str) -> None:
        """Called when a task's run reaches ``point``."""
        ...


class NoHooks:
    def at(self, point: HookPoint, task: str) -> None:
        return None


NO_HOOKS: EngineHooks = NoHooks()
