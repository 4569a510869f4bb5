"""Registering handlers explains itself: module lists as written in the environment, a module
that is not there, an unknown handler, and typed (pydantic) params."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from dagrelay.config import load_settings
from dagrelay.errors import ConfigError, NonRetryableError, UnknownHandler
from dagrelay.handlers.registry import HandlerContext, HandlerRegistry, import_handler_module


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("acme_handlers", ["acme_handlers"]),
        ("acme.a, acme.b ,", ["acme.a", "acme.b"]),
        ('["acme.a", "acme.b"]', ["acme.a", "acme.b"]),
        ("", []),
    ],
)
def test_handler_modules_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("DAGRELAY_HANDLER_MODULES", value)
    assert load_settings().handler_modules == expected


def test_a_bad_setting_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGRELAY_HANDLER_MODULES", '["acme", 3]')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("invalid configuration: handler_modules (DAGRELAY_HANDLER_MODULES)")
    assert "\n" not in message


def test_a_missing_module_says_what_to_do() -> None:
    with pytest.raises(ConfigError) as caught:
        import_handler_module("acme_missing_handlers.sub")
    message = str(caught.value)
    assert message.startswith("handler module 'acme_missing_handlers.sub' not found")
    assert "PYTHONPATH" in message
    assert caught.value.__cause__ is None


def test_an_unknown_handler_suggests_the_closest() -> None:
    registry = HandlerRegistry()
    registry._loaded_plugins = True  # only what this test registers
    registry.register("acme.export", lambda ctx: None)
    with pytest.raises(UnknownHandler) as caught:
        registry.get("acme.exprt")
    assert "did you mean 'acme.export'?" in str(caught.value)


class Limits(BaseModel):
    table: str
    limit: int = 10


def test_typed_params_reach_the_handler_as_the_model() -> None:
    registry = HandlerRegistry()

    def export(ctx: HandlerContext[Limits]) -> dict[str, Any]:
        return {"limit": ctx.params.limit}

    registry.register("acme.export", export, params_model=Limits)
    registration = registry._handlers["acme.export"]
    assert registration.parse_params({"table": "t"}, "e") == Limits(table="t", limit=10)
    assert registration.params_schema is not None
    assert registration.params_schema["required"] == ["table"]
    with pytest.raises(NonRetryableError) as caught:
        registration.check_params({"table": "t", "limit": "many"}, "e")
    assert str(caught.value).startswith("task 'e' (acme.export): params limit: Input should be")


def test_context_exposes_the_batch_and_its_tick() -> None:
    ctx: HandlerContext = HandlerContext(
        "p", "2024-03", "t", 1, {}, batch_params={"scheduled_for": "2024-03-01T06:00:00+01:00"}
    )
    assert ctx.batch == "2024-03"
    assert ctx.scheduled_for is not None
    assert ctx.scheduled_for.isoformat() == "2024-03-01T06:00:00+01:00"
    assert ctx.item is None
    assert HandlerContext("p", "b", "t", 1, {}).scheduled_for is None
