"""The ``schedule:`` section of a pipeline file: apply writes the schedules row, export
reads it back, and applying the export changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, text

from dagrelay.errors import PipelineError
from dagrelay.pipelines.apply import ApplyResult
from dagrelay.pipelines.apply import apply as apply_pipeline
from dagrelay.pipelines.export import export_yaml, read_pipeline
from dagrelay.pipelines.spec import PipelineSpec, load_pipeline
from dagrelay.resources import schema_dir

pytestmark = pytest.mark.integration

T1 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
TASKS = [{"name": "only", "handler": "python.noop"}]


def write(tmp_path: Path, schedule: dict[str, Any] | None) -> PipelineSpec:
    document: dict[str, Any] = {"pipeline": "p", "tasks": TASKS}
    if schedule is not None:
        document["schedule"] = schedule
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return load_pipeline(path)


def apply(db: Engine, spec: PipelineSpec, prune: bool = False) -> ApplyResult:
    with db.begin() as conn:
        return apply_pipeline(conn, spec, prune=prune, now=T1)


def row(db: Engine) -> dict[str, Any] | None:
    with db.connect() as conn:
        found = conn.execute(text("SELECT * FROM schedules")).mappings().one_or_none()
    return dict(found) if found else None


def test_apply_writes_the_schedule_and_export_round_trips_it(db: Engine, tmp_path: Path) -> None:
    spec = write(tmp_path, {"cron": "0 6 1 * *", "timezone": "Europe/Brussels",
                            "batch_id_template": "{interval_start:%Y-%m}", "overlap": "wait",
                            "paused": True})  # fmt: skip
    result = apply(db, spec)
    assert result.schedule == "created"
    assert "schedule created" in str(result)
    stored = row(db)
    assert stored is not None
    assert (stored["cron"], stored["timezone"], stored["overlap"], stored["paused"]) == (
        "0 6 1 * *", "Europe/Brussels", "wait", True,
    )  # fmt: skip
    assert apply(db, spec).changes == 0

    with db.connect() as conn:
        text_out = export_yaml(read_pipeline(conn, "p"))
    assert yaml.safe_load(text_out)["schedule"] == {
        "cron": "0 6 1 * *",
        "timezone": "Europe/Brussels",
        "batch_id_template": "{interval_start:%Y-%m}",
        "overlap": "wait",
        "paused": True,
    }
    (tmp_path / "out.yaml").write_text(text_out, encoding="utf-8")
    assert apply(db, load_pipeline(tmp_path / "out.yaml")).changes == 0


def test_a_new_cron_resets_next_run_and_pause_is_the_operators(db: Engine, tmp_path: Path) -> None:
    apply(db, write(tmp_path, {"cron": "@daily", "paused": True}))
    with db.begin() as conn:
        conn.execute(text("UPDATE schedules SET paused = false, next_run_at = :t"), {"t": T1})
    result = apply(db, write(tmp_path, {"cron": "@hourly", "paused": True}))
    assert result.schedule == "updated"
    stored = row(db)
    assert stored is not None
    assert stored["next_run_at"] is None  # recomputed at the next sweep
    assert stored["paused"] is False  # the file's paused only applies to a new schedule


def test_a_file_without_a_schedule_leaves_it_unless_pruned(db: Engine, tmp_path: Path) -> None:
    apply(db, write(tmp_path, {"cron": "@daily"}))
    kept = apply(db, write(tmp_path, None))
    assert kept.schedule == "not in the file, left in place"
    assert row(db) is not None
    assert apply(db, write(tmp_path, None), prune=True).schedule == "deleted"
    assert row(db) is None


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"cron": "* * * *"}, "p.yaml: schedule: cron '* * * *': expected five fields"),
        ({"cron": "61 * * * *"}, "p.yaml: schedule: cron '61 * * * *' is not a valid"),
        ({"cron": "@daily", "timezone": "Mars/Olympus"}, "timezone 'Mars/Olympus' is not an IANA"),
        ({"cron": "@daily", "batch_id_template": "{ds}"}, "unknown field {ds}"),
        ({"cron": "@daily", "batch_id_template": "x/{scheduled_for}"}, "not a valid batch id"),
        ({"cron": "@hourly", "batch_id_template": "{scheduled_for:%Y-%m-%d}"}, "gives '"),
        ({"cron": "@daily", "overlap": "queue"}, "schedule/overlap: 'queue' is not one of"),
        ({"cron": "@daily", "every": "day"}, "schedule: unknown key 'every'"),
    ],
)
def test_bad_schedules_are_refused_naming_the_problem(
    tmp_path: Path, schedule: dict[str, Any], message: str
) -> None:
    with pytest.raises(PipelineError) as info:
        write(tmp_path, schedule)
    assert message in str(info.value)


def test_the_example_has_a_paused_monthly_schedule_named_like_its_batches() -> None:
    spec = load_pipeline(schema_dir() / "pipelines" / "monthly_profit.yaml")
    assert spec.schedule is not None
    assert spec.schedule.paused is True
    assert spec.schedule.batch_id_template == "{interval_start:%Y-%m}"
