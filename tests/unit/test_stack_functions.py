"""The local stack serves the functions it is asked to (StackConfig.functions): a function it
does not serve has no URL, and asking for one says how to get it."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagrelay.local.processes import StackError
from dagrelay.local.stack import FUNCTIONS, Stack, StackConfig, StackInfo


def info(**urls: str) -> StackInfo:
    return StackInfo(
        pubsub_emulator_host="127.0.0.1:8085",
        database_url="postgresql+pg8000://postgres@127.0.0.1:5432/x",
        project_id="p",
        events_topic="ev",
        subscription="ev-router",
        alerts_topic="alerts",
        dead_letter_topic="dead",
        storage_emulator_host=None,
        bigquery_endpoint=None,
        inbox_bucket="inbox",
        router_url="http://127.0.0.1:1001",
        pids={},
        log_dir="logs",
        **urls,
    )


def test_a_stack_serves_every_function_unless_told_otherwise() -> None:
    assert StackConfig().functions == FUNCTIONS == ("router", "status", "operate")


def test_a_function_not_served_has_no_url_and_asking_for_it_says_how() -> None:
    router_only = info()
    assert router_only.url("router") == "http://127.0.0.1:1001"
    for function in ("status", "operate"):
        with pytest.raises(StackError, match=rf"does not serve the {function} function.*serve"):
            router_only.url(function)
    with pytest.raises(StackError, match="no function 'dashboard'"):
        router_only.url("dashboard")
    assert "STATUS_URL" not in router_only.env()


def test_a_served_dashboard_has_its_url_in_the_environment() -> None:
    served = info(status_url="http://127.0.0.1:1002", operate_url="http://127.0.0.1:1003")
    assert served.url("status") == served.env()["STATUS_URL"] == "http://127.0.0.1:1002"
    assert served.url("operate") == "http://127.0.0.1:1003"


@pytest.mark.parametrize(
    ("functions", "message"),
    [
        (("status", "operate"), "serves the router"),
        (("router", "deploy"), "no function 'deploy'"),
    ],
)
def test_a_stack_it_cannot_serve_is_refused_before_anything_starts(
    functions: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    workdir = tmp_path / "stack"
    stack = Stack(StackConfig(functions=functions, workdir=workdir))
    with pytest.raises(StackError, match=message):
        stack.start()
    assert not workdir.exists()  # nothing was started, not even its log directory
    assert stack.processes == []


def test_serving_a_dashboard_needs_a_running_stack() -> None:
    with pytest.raises(StackError, match="not running"):
        Stack(StackConfig()).serve("status")
