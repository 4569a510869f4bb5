"""Crash points: parsing the spec, firing once per (point, task), "once" across instances."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine

from dagrelay.config import Settings
from dagrelay.engine.hooks import NO_HOOKS
from dagrelay.local import crashes
from dagrelay.local.crashes import CrashInjector, CrashPoint, InjectedCrash
from dagrelay.router.wiring import build_engine
from dagrelay.store.outbox import InMemoryPublisher


def test_parse_reads_points_and_tasks() -> None:
    injector = CrashInjector.parse(" after_claim:load , after_commit:*, in_handler ,,")
    assert injector.armed == {
        CrashPoint.AFTER_CLAIM: {"load"},
        CrashPoint.AFTER_COMMIT: {"*"},
        CrashPoint.IN_HANDLER: {"*"},  # no task: every task
    }


def test_parse_empty_spec_arms_nothing() -> None:
    injector = CrashInjector.parse("")
    assert injector.armed == {}
    injector.at(CrashPoint.AFTER_CLAIM, "a")  # disarmed: does not raise


def test_unknown_point_names_the_known_points() -> None:
    with pytest.raises(ValueError, match="unknown crash point 'before_lunch'") as info:
        CrashInjector.parse("after_claim:a,before_lunch:b")
    for point in CrashPoint:
        assert point.value in str(info.value)


def test_fires_once_per_point_and_task() -> None:
    injector = CrashInjector.parse("after_claim:a,after_handler:a")
    with pytest.raises(InjectedCrash, match="after_claim of task a"):
        injector.at(CrashPoint.AFTER_CLAIM, "a")
    injector.at(CrashPoint.AFTER_CLAIM, "a")  # already fired
    injector.at(CrashPoint.AFTER_CLAIM, "b")  # not armed for b
    injector.at(CrashPoint.IN_HANDLER, "a")  # point not armed
    with pytest.raises(InjectedCrash, match="after_handler of task a"):
        injector.at(CrashPoint.AFTER_HANDLER, "a")


def test_wildcard_fires_once_for_each_task() -> None:
    injector = CrashInjector.parse("in_handler:*")
    for task in ("a", "b"):
        with pytest.raises(InjectedCrash):
            injector.at(CrashPoint.IN_HANDLER, task)
        injector.at(CrashPoint.IN_HANDLER, task)


def test_injected_crash_is_not_an_exception() -> None:
    """Handlers' `except Exception` must not swallow it: the process 'dies' at the point."""
    assert issubclass(InjectedCrash, BaseException)
    assert not issubclass(InjectedCrash, Exception)


def test_marker_dir_makes_once_hold_across_instances(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    first = CrashInjector.parse("after_commit:a", marker_dir=markers)
    second = CrashInjector.parse("after_commit:a", marker_dir=markers)
    with pytest.raises(InjectedCrash):
        first.at(CrashPoint.AFTER_COMMIT, "a")
    second.at(CrashPoint.AFTER_COMMIT, "a")  # a restarted worker gets past it
    assert [p.name for p in markers.iterdir()] == ["after_commit-a"]
    third = CrashInjector.parse("after_commit:a", marker_dir=tmp_path / "other")
    with pytest.raises(InjectedCrash):
        third.at(CrashPoint.AFTER_COMMIT, "a")


def test_the_local_stack_arms_crash_points_from_its_own_variables(tmp_path: Path) -> None:
    assert CrashInjector.from_env({}) is None
    injector = CrashInjector.from_env(
        {crashes.POINTS_ENV: "after_commit:a", crashes.MARKER_DIR_ENV: str(tmp_path)}
    )
    assert injector is not None
    assert injector.armed == {CrashPoint.AFTER_COMMIT: {"a"}}
    assert injector.exit_process  # a router process dies, as a killed function would
    assert injector.marker_dir == tmp_path


def test_production_settings_and_wiring_carry_no_crash_points() -> None:
    assert [name for name in Settings.model_fields if "crash" in name] == []
    engine = build_engine(
        Settings(handler_modules=[]),
        db=create_engine("postgresql+pg8000://nobody@127.0.0.1/none"),  # never connects
        publisher=InMemoryPublisher(),
    )
    assert engine.hooks is NO_HOOKS
