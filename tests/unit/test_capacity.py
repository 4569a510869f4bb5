"""The capacity model (dagrelay.capacity): the tier table, what a plan needs, the router's
start-up line, and the copies that must not drift — Terraform's locals and defaults, the
README's table."""

from __future__ import annotations

import re

import pytest

from dagrelay import capacity
from dagrelay.capacity import Plan, max_router_instances, startup_report, tier_connections
from tests.unit.terraform_helpers import REPO, TERRAFORM, load_config


@pytest.mark.parametrize(
    ("tier", "connections"),
    [
        ("db-f1-micro", 25),
        ("db-g1-small", 50),
        ("db-custom-1-3840", 100),
        ("db-custom-1-6144", 200),
        ("db-custom-2-7680", 400),
        ("db-custom-4-15360", 500),
        ("db-custom-8-30720", 600),
        ("db-custom-16-61440", 800),
        ("db-custom-32-122880", 1000),
        ("db-custom-96-638976", 1000),
        ("db-perf-optimized-N-2", None),
        ("db-n1-standard-1", None),
    ],
)
def test_tier_connections(tier: str, connections: int | None) -> None:
    assert tier_connections(tier) == connections


def test_the_defaults_run_200_tasks_at_once_on_the_smallest_tier() -> None:
    plan = Plan(max_connections=25)
    assert plan.problems() == []
    assert plan.tasks_in_flight >= 200
    assert plan.needed <= 25 - capacity.RESERVED


@pytest.mark.parametrize(
    ("plan", "problem"),
    [
        (Plan(max_connections=25, router_instances=5), "need 25; the database takes 22"),
        (Plan(max_connections=50, pool_size=10, max_overflow=5), "need 70"),
        (Plan(max_connections=400, request_concurrency=2), "can never use"),
    ],
)
def test_a_plan_the_database_cannot_take_is_named(plan: Plan, problem: str) -> None:
    assert any(problem in p for p in plan.problems()), plan.problems()


def test_tasks_in_flight_cost_no_connections() -> None:
    few = Plan(max_connections=25, request_concurrency=1)
    many = Plan(max_connections=25, request_concurrency=1000)
    assert many.needed == few.needed
    assert many.tasks_in_flight == 1000 * few.tasks_in_flight


def test_max_router_instances_fills_the_tier() -> None:
    plan = Plan(max_connections=50)
    n = max_router_instances(plan)
    assert Plan(max_connections=50, router_instances=n).problems() == []
    assert Plan(max_connections=50, router_instances=n + 1).problems() != []


def test_the_router_says_whether_the_deployment_holds() -> None:
    figures = {"pool_size": 2, "max_overflow": 1, "pool_timeout_s": 10, "other_connections": 10}
    holds, line = startup_report(
        request_concurrency=100, router_instances=4, max_connections=25, **figures
    )
    assert holds
    assert line.startswith("capacity model holds: 4 router instances x 100 requests = 400")
    holds, line = startup_report(
        request_concurrency=100, router_instances=8, max_connections=25, **figures
    )
    assert not holds
    assert "does NOT hold" in line
    assert "lower router_max_instances" in line
    holds, line = startup_report(
        request_concurrency=None, router_instances=None, max_connections=None, **figures
    )
    assert holds
    assert "not checked" in line
    assert "2 + 1 connections" in line


def test_terraform_mirrors_the_model() -> None:
    tf = load_config()
    assert tf.locals["tier_connections"] == capacity.SHARED_CORE_CONNECTIONS
    rows = [tuple(row) for row in tf.locals["memory_connections"]]
    assert rows == list(capacity.MEMORY_CONNECTIONS)
    assert tf.locals["db_reserved_connections"] == capacity.RESERVED
    assert tf.locals["db_admin_connections"] == capacity.ADMIN_CONNECTIONS
    assert tf.locals["dashboard_connections"] == capacity.DASHBOARD_CONNECTIONS
    numbers = (
        "router_max_instances",
        "router_concurrency",
        "db_pool_size",
        "db_max_overflow",
        "status_max_instances",
        "operate_max_instances",
    )
    defaults = {name: int(tf.variables[name]["default"]) for name in numbers}
    assert defaults["router_max_instances"] == capacity.ROUTER_INSTANCES
    assert defaults["router_concurrency"] == capacity.REQUEST_CONCURRENCY
    assert defaults["db_pool_size"] == capacity.POOL_SIZE
    assert defaults["db_max_overflow"] == capacity.MAX_OVERFLOW
    dashboards = defaults["status_max_instances"] + defaults["operate_max_instances"]
    assert dashboards == capacity.DASHBOARD_INSTANCES
    deploy = load_config(TERRAFORM / "deploy")
    for name in ("router_max_instances", "router_concurrency", "db_pool_size", "db_max_overflow"):
        assert int(deploy.variables[name].get("default") or 0) == defaults[name], name


def test_terraform_refuses_what_the_model_refuses() -> None:
    """The router's preconditions: the total, the CPU for concurrency, an unknown tier."""
    router = load_config().resource("google_cloudfunctions2_function", "router")
    (lifecycle,) = router["lifecycle"]
    conditions = " ".join(p["condition"] for p in lifecycle["precondition"])
    assert "local.db_connections_needed <= local.db_connections_usable" in conditions
    assert "tonumber(var.router_cpu) >= 1" in conditions
    assert "local.db_max_connections > 0" in conditions


def test_the_readme_table_is_the_model() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert capacity.markdown_table() in readme
    assert re.search(r"`db-f1-micro` \| 25 \| 22 \| 4 \| 400 \|", readme)
