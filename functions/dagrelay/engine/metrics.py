"""What an operator alerts on, computed from the database by the sweep (once a minute) and
written as structured log lines: Terraform's log-based metrics and alert policies read them
(``terraform/metrics.tf``; ARCHITECTURE.md, "Tracing and metrics").

- ``metric: dagrelay_state`` (one line): tasks in flight and queued, the oldest unpublished
  message and queued task (seconds), running batches and the oldest one's age, and over the
  last ``WINDOW``: batches finished and failed, the longest duration, tasks failed.
- ``metric: dagrelay_pool`` (one line per pool): slots, holders, queued, oldest queued.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from dagrelay.store.queries import query

log = logging.getLogger(__name__)

WINDOW = timedelta(minutes=1)  # the sweep's period: what "recently ended" means


def collect(db: Engine, now: datetime) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The state line's fields and one dict per pool (read-only, one short transaction)."""
    with db.connect() as conn:
        state = conn.execute(query("operations_metrics"), {"now": now, "since": now - WINDOW})
        pools = conn.execute(query("pool_metrics"), {"now": now}).mappings().all()
        return dict(state.mappings().one()), [dict(p) for p in pools]


def report(db: Engine, now: datetime) -> int:
    """Log the metric lines; returns how many pools were reported."""
    state, pools = collect(db, now)
    log.info("dagrelay metrics", extra={"metric": "dagrelay_state", **state})
    for pool in pools:
        log.info("dagrelay pool %s", pool["pool"], extra={"metric": "dagrelay_pool", **pool})
    return len(pools)
