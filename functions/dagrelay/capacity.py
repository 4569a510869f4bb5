"""The capacity model: router instances, request concurrency, pool sizes and the database's
connection limit, related in one place (ARCHITECTURE.md, "Capacity"). Pure: Terraform mirrors
the tier table and the sum (terraform/functions.tf, a unit test compares them), the router
checks its own settings against it at start, README.md's table is ``markdown_table()``.

A handler holds no connection (ARCHITECTURE.md, "Flow of one message"): a connection is taken
for each of the engine's short transactions (claim, conclude, publish's mark) and given back.
So tasks in flight are bounded by request threads (instances x request concurrency), and
connections by the pools (instances x (pool size + overflow)), each on its own; a thread that
finds every pooled connection in a transaction waits for one, at most ``db_pool_timeout_s``.

``python -m dagrelay.capacity`` prints the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Cloud SQL for PostgreSQL's default max_connections per tier ("Quotas and limits",
# cloud.google.com/sql/docs/postgres/quotas): the shared-core tiers by name, the others by
# memory. Setting the max_connections flag changes it (db_max_connections then).
SHARED_CORE_CONNECTIONS = {"db-f1-micro": 25, "db-g1-small": 50}
# (memory from, in MiB, max_connections): the last row whose memory the tier reaches.
MEMORY_CONNECTIONS = (
    (0, 25),
    (3840, 100),  # 3.75 GiB
    (6144, 200),  # 6 GiB
    (7680, 400),  # 7.5 GiB
    (15360, 500),  # 15 GiB
    (30720, 600),  # 30 GiB
    (61440, 800),  # 60 GiB
    (122880, 1000),  # 120 GiB
)
# PostgreSQL keeps superuser_reserved_connections (3) for superusers; Cloud SQL's users
# (cloudsqlsuperuser included) are not superusers, so they get max_connections - 3.
RESERVED = 3
CUSTOM_TIER = re.compile(r"^db-custom-(\d+)-(\d+)$")

# The defaults (terraform/variables.tf has the same): on the smallest tier, 4 routers x 80
# requests = 400 tasks in flight on 12 of its 22 usable connections.
ROUTER_INSTANCES = 4
REQUEST_CONCURRENCY = 100
POOL_SIZE = 2
MAX_OVERFLOW = 1
DASHBOARD_INSTANCES = 4  # status_max_instances (2) + operate_max_instances (2)
DASHBOARD_CONNECTIONS = 2  # per dashboard instance: pool 1 + overflow 1 (concurrency 1)
ADMIN_CONNECTIONS = 2  # migrations, the CLI from a bastion, an operator's psql


def tier_connections(tier: str) -> int | None:
    """The tier's default max_connections; None for a tier the table does not know."""
    if tier in SHARED_CORE_CONNECTIONS:
        return SHARED_CORE_CONNECTIONS[tier]
    custom = CUSTOM_TIER.match(tier)
    if custom is None:
        return None
    memory_mib = int(custom.group(2))
    return max(limit for start, limit in MEMORY_CONNECTIONS if memory_mib >= start)


@dataclass(frozen=True)
class Plan:
    """One deployment's numbers."""

    max_connections: int  # the database's max_connections
    router_instances: int = ROUTER_INSTANCES  # max_instance_count of the router
    request_concurrency: int = REQUEST_CONCURRENCY  # max_instance_request_concurrency
    pool_size: int = POOL_SIZE
    max_overflow: int = MAX_OVERFLOW
    other_connections: int = DASHBOARD_INSTANCES * DASHBOARD_CONNECTIONS + ADMIN_CONNECTIONS

    @property
    def per_router(self) -> int:
        return self.pool_size + self.max_overflow

    @property
    def router_connections(self) -> int:
        return self.router_instances * self.per_router

    @property
    def needed(self) -> int:
        """Connections open at worst: every router's full pool, plus the others."""
        return self.router_connections + self.other_connections

    @property
    def usable(self) -> int:
        return self.max_connections - RESERVED

    @property
    def tasks_in_flight(self) -> int:
        return self.router_instances * self.request_concurrency

    def problems(self) -> list[str]:
        """What is wrong with the plan (empty: it holds)."""
        found = []
        if self.needed > self.usable:
            found.append(
                f"{self.router_instances} router instances x (pool {self.pool_size} + overflow "
                f"{self.max_overflow}) = {self.router_connections} connections, plus "
                f"{self.other_connections} for the dashboards and administration, need "
                f"{self.needed}; the database takes {self.usable} ({self.max_connections} "
                f"max_connections - {RESERVED} reserved): lower router_max_instances, "
                f"db_pool_size or db_max_overflow, or take a larger tier"
            )
        if self.per_router > self.request_concurrency:
            found.append(
                f"a router's pool ({self.per_router} connections) is larger than its request "
                f"concurrency ({self.request_concurrency}): connections it can never use"
            )
        return found

    def summary(self) -> str:
        return (
            f"{self.router_instances} router instances x {self.request_concurrency} requests "
            f"= {self.tasks_in_flight} tasks in flight; {self.router_instances} x "
            f"({self.pool_size} + {self.max_overflow}) = {self.router_connections} router "
            f"connections + {self.other_connections} others = {self.needed} of the "
            f"{self.usable} usable ({self.max_connections} max_connections - {RESERVED} reserved)"
        )


def max_router_instances(plan: Plan) -> int:
    """The most router instances the plan's database takes with its pool sizes."""
    return max(0, (plan.usable - plan.other_connections) // plan.per_router)


def startup_report(
    *,
    pool_size: int,
    max_overflow: int,
    pool_timeout_s: float,
    request_concurrency: int | None,
    router_instances: int | None,
    max_connections: int | None,
    other_connections: int,
) -> tuple[bool, str]:
    """(holds, the line a router logs at start): the deployment's plan checked when its
    figures are set (Terraform sets them), else what this instance alone will do."""
    if request_concurrency is None or router_instances is None or max_connections is None:
        return True, (
            f"capacity: this instance's pool is {pool_size} + {max_overflow} connections, a "
            f"request waits at most {pool_timeout_s:g} s for one; the deployment's figures "
            "(request_concurrency, router_max_instances, db_max_connections) are not set, so "
            "the capacity model is not checked"
        )
    plan = Plan(
        max_connections=max_connections,
        router_instances=router_instances,
        request_concurrency=request_concurrency,
        pool_size=pool_size,
        max_overflow=max_overflow,
        other_connections=other_connections,
    )
    problems = plan.problems()
    if problems:
        return False, f"capacity model does NOT hold: {'; '.join(problems)} ({plan.summary()})"
    return True, f"capacity model holds: {plan.summary()}"


TABLE_TIERS = ("db-f1-micro", "db-g1-small", "db-custom-1-3840", "db-custom-2-7680")


def markdown_table(tiers: tuple[str, ...] = TABLE_TIERS) -> str:
    """What each tier sustains with the default pool and concurrency (README.md's table)."""
    header = (
        f"| tier | max_connections | usable | router instances (pool {POOL_SIZE} + "
        f"{MAX_OVERFLOW}) | tasks in flight (x {REQUEST_CONCURRENCY}) |"
    )
    lines = [
        header,
        "|---|---|---|---|---|",
    ]
    for tier in tiers:
        limit = tier_connections(tier)
        if limit is None:
            raise ValueError(f"unknown tier {tier}")
        plan = Plan(max_connections=limit)
        instances = max_router_instances(plan)
        lines.append(
            f"| `{tier}` | {limit} | {plan.usable} | {instances} | "
            f"{instances * REQUEST_CONCURRENCY} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.stdout.write(markdown_table() + "\n")
