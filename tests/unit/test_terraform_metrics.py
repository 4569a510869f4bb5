"""The operations metrics in Terraform (terraform/metrics.tf) read what the sweep logs
(dagrelay.engine.metrics, schema/sql/metrics.sql), and every alert has a threshold."""

from __future__ import annotations

import re

from tests.unit.terraform_helpers import REPO, load_config

SQL = (REPO / "schema" / "sql" / "metrics.sql").read_text(encoding="utf-8")
ENGINE = (REPO / "functions" / "dagrelay" / "engine" / "metrics.py").read_text(encoding="utf-8")


def test_each_gauge_is_a_field_of_the_metrics_line() -> None:
    tf = load_config()
    gauges = set(tf.locals["state_gauges"])
    statement = SQL.split("-- name: operations_metrics")[1].split("-- name:")[0]
    assert gauges <= set(re.findall(r"\bAS (\w+)", statement))
    assert '"metric": "dagrelay_state"' in ENGINE
    assert '"metric": "dagrelay_pool"' in ENGINE
    pool_statement = SQL.split("-- name: pool_metrics")[1]
    assert {"pool", "queued"} <= set(re.findall(r"\bAS (\w+)", pool_statement))


def test_each_alert_reads_a_gauge_and_has_a_threshold() -> None:
    tf = load_config()
    alerts = set(tf.locals["gauge_alerts"])
    assert alerts <= set(tf.locals["state_gauges"])
    thresholds = tf.variables["operations_alerts"]["type"]
    for name in [*alerts, "sweep_missing_s"]:
        assert f"{name} = optional(number, " in thresholds, name
