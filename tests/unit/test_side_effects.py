"""dagrelay.testing's SideEffects fake and the duplicate mode's second run, without a database:
a keyed effect is applied once however often it is recorded; a second run that applies an
effect again fails the task, saying which effect and what to do."""

from __future__ import annotations

from typing import Any

import pytest

from dagrelay.errors import NonRetryableError
from dagrelay.handlers.registry import HandlerContext
from dagrelay.testing.effects import SideEffects, _once, _twice


def context(task: str = "send", map_index: int | None = None) -> HandlerContext[Any]:
    return HandlerContext(
        pipeline="p", batch_id="b", task=task, attempt=1, params={}, run_id=7, map_index=map_index
    )


def test_a_keyed_effect_is_applied_once() -> None:
    effects = SideEffects()
    assert effects.record("mail", {"to": "a"}, key="k1") is True
    assert effects.record("mail", {"to": "a"}, key="k1") is False
    assert effects.record("mail", {"to": "a"}) is True  # no key: every record applies
    assert effects.names() == ["mail", "mail"]


@pytest.mark.parametrize(
    ("key", "how"),
    [
        (lambda ctx, n: None, "without a key"),
        (lambda ctx, n: f"{ctx.idempotency_key}-{n}", "under a new key"),
    ],
)
def test_the_second_run_that_applies_an_effect_fails(key: Any, how: str) -> None:
    effects = SideEffects()
    runs = iter(range(10))

    def handler(ctx: HandlerContext[Any]) -> dict[str, Any]:
        effects.record("mail", None, key=key(ctx, next(runs)))
        return {"sent": True}

    with pytest.raises(NonRetryableError) as raised:
        _twice(handler)(context())
    message = str(raised.value)
    assert "task 'send' is not idempotent" in message
    assert f"repeated the side effect 'mail' ({how}" in message
    assert "key=context.idempotency_key" in message


def test_a_handler_keyed_by_its_idempotency_key_passes_twice() -> None:
    effects = SideEffects()

    def handler(ctx: HandlerContext[Any]) -> dict[str, Any]:
        effects.record("upload", ctx.item, key=ctx.idempotency_key)
        return {"ok": True}

    assert _twice(handler)(context(map_index=3)) == {"ok": True}
    [effect] = effects.applied
    assert (effect.task, effect.map_index, effect.key) == ("send", 3, context().idempotency_key)


def test_effects_are_attributed_to_the_run_once_too() -> None:
    effects = SideEffects()

    def handler(ctx: HandlerContext[Any]) -> None:
        effects.record("x")

    _once(handler)(context("t"))
    effects.record("outside")
    assert [(e.name, e.task) for e in effects.applied] == [("x", "t"), ("outside", None)]
