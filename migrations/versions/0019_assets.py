"""Assets: pipelines started by the data other pipelines produce (ARCHITECTURE.md, "Assets").

- ``tasks.updates`` / ``version_tasks.updates`` (text[], default empty): the assets a task
  updates (``bq://finance.sales``, ``gs://bucket/prefix`` or any free name). The version
  snapshot holds it, hashed only when not empty, so a pipeline without assets keeps its version.
- ``asset_events``: one row per asset a task's success updated, written in the transaction of
  that success; ``UNIQUE (asset, log_id)`` makes a repeated write a no-op.
- ``asset_schedules``: a pipeline started when every asset it waits for was updated (per
  partition) since its last asset-triggered batch; ``runs`` counts those batches.
- ``asset_triggers``: which events started which downstream batch; the primary key
  ``(pipeline, event_id)`` means an event is consumed at most once per downstream pipeline.

Existing rows are kept (every task updates nothing). The downgrade drops the tables, restores
0015's snapshot function and drops the columns.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def _revision(file: str) -> ModuleType:
    """An earlier revision, whose function this one edits (and its downgrade puts back)."""
    path = Path(__file__).with_name(file)
    spec = importlib.util.spec_from_file_location(f"dagrelay_migration_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _edit(text: str, edits: list[tuple[str, str]]) -> str:
    """``text`` with each (old, new) replaced; an old string that is not there exactly once is
    an error (a change to the revision edited must not go unnoticed)."""
    for old, new in edits:
        if text.count(old) != 1:
            raise ValueError(f"migration 0019: expected one {old!r} in the function it edits")
        text = text.replace(old, new)
    return text


V15 = _revision("0015_teardown.py")

# A list of asset names: no NULL, no empty name, at most 64 KiB of names in all (the pure check,
# dagrelay.engine.asset_rules.name_problem, says at most 1024 characters each).
NAMES_CHECK = (
    "array_position({c}, NULL) IS NULL AND NOT ('' = ANY ({c})) "
    "AND length(array_to_string({c}, ',')) <= 65536"
)

UPGRADE = [
    (
        "ALTER TABLE tasks ADD COLUMN updates text[] NOT NULL DEFAULT '{}' "
        f"CONSTRAINT tasks_updates_check CHECK ({NAMES_CHECK.format(c='updates')})"
    ),
    "ALTER TABLE version_tasks ADD COLUMN updates text[] NOT NULL DEFAULT '{}'",
    """
CREATE TABLE asset_events (
    event_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    asset         text NOT NULL CHECK (asset <> '' AND length(asset) <= 1024),
    pipeline      text NOT NULL,
    batch_id      text NOT NULL,
    task_id       integer NOT NULL,
    task          text NOT NULL,
    log_id        bigint NOT NULL,
    partition_key text,
    created_at    timestamptz NOT NULL,
    CONSTRAINT asset_events_once UNIQUE (asset, log_id)
)""",
    "CREATE INDEX asset_events_asset_idx ON asset_events (asset, event_id)",
    "CREATE INDEX asset_events_batch_idx ON asset_events (pipeline, batch_id)",
    f"""
CREATE TABLE asset_schedules (
    pipeline          text PRIMARY KEY,
    assets            text[] NOT NULL
        CHECK (cardinality(assets) > 0 AND {NAMES_CHECK.format(c="assets")}),
    batch_id_template text NOT NULL DEFAULT 'assets-{{n}}'
        CHECK (batch_id_template <> '' AND length(batch_id_template) <= 200),
    paused            boolean NOT NULL DEFAULT false,
    since_event_id    bigint NOT NULL DEFAULT 0,
    runs              bigint NOT NULL DEFAULT 0 CHECK (runs >= 0),
    last_batch_id     text,
    last_triggered_at timestamptz,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
)""",
    "CREATE INDEX asset_schedules_assets_idx ON asset_schedules USING gin (assets)",
    """
CREATE TABLE asset_triggers (
    pipeline   text NOT NULL,
    event_id   bigint NOT NULL REFERENCES asset_events (event_id) ON DELETE CASCADE,
    batch_id   text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (pipeline, event_id)
)""",
    "CREATE INDEX asset_triggers_batch_idx ON asset_triggers (pipeline, batch_id)",
]

# 0015's snapshot with the assets (hashed only when a task updates some).
PIN_FUNCTION = _edit(
    V15.PIN_FUNCTION,
    [
        (
            (
                "                      || CASE WHEN t.teardown THEN '{\"teardown\": true}'::jsonb\n"
                "                              ELSE '{}'::jsonb END\n"
            ),
            (
                "                      || CASE WHEN t.teardown THEN '{\"teardown\": true}'::jsonb\n"
                "                              ELSE '{}'::jsonb END\n"
                "                      || CASE WHEN cardinality(t.updates) = 0 THEN '{}'::jsonb\n"
                "                              ELSE jsonb_build_object('updates', t.updates) END\n"
            ),
        ),
        (
            "max_active, map, teardown)\n    SELECT",
            "max_active, map, teardown, updates)\n    SELECT",
        ),
        (
            "s.max_active, s.map, coalesce(s.teardown, false)\n",
            (
                "s.max_active, s.map, coalesce(s.teardown, false),\n"
                "           coalesce(s.updates, '{}')\n"
            ),
        ),
        (
            "max_active integer, map jsonb, teardown boolean);",
            "max_active integer, map jsonb, teardown boolean, updates text[]);",
        ),
    ],
)


def upgrade() -> None:
    for statement in (*UPGRADE, PIN_FUNCTION):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE asset_triggers")
    op.execute("DROP TABLE asset_schedules")
    op.execute("DROP TABLE asset_events")
    op.execute(V15.PIN_FUNCTION)
    op.execute("ALTER TABLE version_tasks DROP COLUMN updates")
    op.execute("ALTER TABLE tasks DROP COLUMN updates")
