"""Dynamic fan-out (map): a task with ``map`` runs once per item of a list in a parent's output.

- ``tasks.map`` and ``version_tasks.map`` (jsonb: over, max_items, tolerated_failures): the
  version snapshot holds it, so a batch keeps its map when the live definition changes. A task
  without ``map`` adds nothing to the snapshot's content, so existing versions keep their hash.
- ``task_log`` is one row per (batch, task, map_index): -1 for a task that is not mapped and for
  a mapped task's group row, 0..n-1 for its instances (each with its ``item``). Every existing
  row gets -1.
- ``map_groups``: per (batch, mapped task) the counters its instances' terminal writes update;
  the group is decided once, when done = total, whatever the number of items.
- The engine's SQL functions learn the group: the fan-in cascade opens a mapped child's group
  row (PROCESSING, no message: the engine creates the instances in the same transaction), a
  parent's output is the group row's, an instance's failure fails a batch only through its
  group, and run_task messages name the instance.

The downgrade is refused while task_log holds instances or a task is mapped (the old schema has
no place for them); otherwise it restores 0010's functions and drops the columns.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _revision(name: str) -> ModuleType:
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"dagrelay_migration_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _replacing(definition: str) -> str:
    return definition.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def _edit(text: str, edits: list[tuple[str, str]]) -> str:
    """``text`` with each (old, new) replaced; an old string that is not there is an error (a
    change to the revision edited must not go unnoticed)."""
    for old, new in edits:
        if text.count(old) != 1:
            raise ValueError(f"migration 0012: expected one {old!r} in the function it edits")
        text = text.replace(old, new)
    return text


V10 = _revision("0010_versions.py")

TABLES = [
    "ALTER TABLE tasks ADD COLUMN map jsonb",
    "ALTER TABLE version_tasks ADD COLUMN map jsonb",
    "ALTER TABLE task_log ADD COLUMN map_index integer NOT NULL DEFAULT -1",
    "ALTER TABLE task_log ADD COLUMN item jsonb",
    "ALTER TABLE task_log DROP CONSTRAINT task_log_batch_task_key",
    """ALTER TABLE task_log ADD CONSTRAINT task_log_batch_task_key
       UNIQUE (batch_id, task_id, map_index)""",
    """
    CREATE TABLE map_groups (
        batch_id   text NOT NULL,
        task_id    integer NOT NULL,
        pipeline   text NOT NULL,
        total      integer NOT NULL,
        tolerated  integer NOT NULL,
        succeeded  integer NOT NULL DEFAULT 0,
        failed     integer NOT NULL DEFAULT 0,
        PRIMARY KEY (batch_id, task_id),
        FOREIGN KEY (pipeline, batch_id) REFERENCES batches (pipeline, batch_id)
            ON DELETE CASCADE,
        CONSTRAINT map_groups_counts CHECK (
            succeeded >= 0 AND failed >= 0 AND succeeded + failed <= total)
    )
    """,
]

RUN_TASK_MESSAGE = r"""
CREATE FUNCTION dagrelay_run_task_message(
    p_pipeline text, p_batch_id text, p_task text, p_map_index integer,
    OUT payload jsonb, OUT attributes jsonb
) LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object('action', 'run_task', 'pipeline', p_pipeline,
                              'batch_id', p_batch_id, 'task', p_task)
           || CASE WHEN p_map_index >= 0 THEN jsonb_build_object('map_index', p_map_index)
                   ELSE '{}' END,
           jsonb_build_object('action', 'run_task')
$$
"""

PIN_FUNCTION = _edit(
    _replacing(V10.PIN_FUNCTION),
    [
        (
            "'pool', t.pool, 'enabled', t.enabled) ORDER BY t.name)",
            (
                "'pool', t.pool, 'enabled', t.enabled)\n"
                "                      || CASE WHEN t.map IS NULL THEN '{}'::jsonb\n"
                "                              ELSE jsonb_build_object('map', t.map) END\n"
                "                      ORDER BY t.name)"
            ),
        ),
        ("timeout_s, pool, enabled)\n    SELECT", "timeout_s, pool, enabled, map)\n    SELECT"),
        ("s.timeout_s, s.pool, s.enabled\n", "s.timeout_s, s.pool, s.enabled, s.map\n"),
        (
            "timeout_s integer, pool text, enabled boolean);",
            "timeout_s integer, pool text, enabled boolean, map jsonb);",
        ),
    ],
)

PARENT_OUTPUTS = _edit(
    _replacing(V10.PARENT_OUTPUTS),
    [("AND pl.output IS NOT NULL", "AND pl.map_index = -1 AND pl.output IS NOT NULL")],
)

ADVANCE_CHILDREN = _edit(
    V10.ADVANCE_CHILDREN,
    [
        (
            "SELECT c.pipeline, c.task_id, t.name, t.enabled,",
            "SELECT c.pipeline, c.task_id, t.name, t.enabled, t.map,",
        ),
        (
            "WHEN d.enabled THEN 'NEW'",
            (
                "WHEN d.enabled AND d.map IS NULL THEN 'NEW'\n"
                "                        WHEN d.enabled THEN 'PROCESSING'"
            ),
        ),
        (
            "ON CONFLICT (batch_id, task_id) DO NOTHING",
            "ON CONFLICT ON CONSTRAINT task_log_batch_task_key DO NOTHING",
        ),
        ("WHERE t.status <> 'NEW';", "WHERE t.status NOT IN ('NEW', 'PROCESSING');"),
    ],
)

BATCH_OUTCOME = _edit(
    V10.BATCH_OUTCOME,
    [
        (
            "AND tl.status IN ('ERROR', 'UPSTREAM_FAILED')) THEN",
            "AND tl.status IN ('ERROR', 'UPSTREAM_FAILED') AND tl.map_index = -1) THEN",
        )
    ],
)

UPGRADE = [
    *TABLES,
    RUN_TASK_MESSAGE,
    PIN_FUNCTION,
    PARENT_OUTPUTS,
    ADVANCE_CHILDREN,
    BATCH_OUTCOME,
]

REFUSE_DOWNGRADE = r"""
DO $$
DECLARE
    mapped text;
BEGIN
    SELECT string_agg(DISTINCT format('%s/%s', pipeline, name), ', ') INTO mapped
    FROM tasks WHERE map IS NOT NULL;
    IF mapped IS NOT NULL THEN
        RAISE EXCEPTION 'cannot downgrade below 0012: mapped tasks: %', mapped
            USING HINT = 'remove map from these tasks first';
    END IF;
    IF EXISTS (SELECT 1 FROM task_log WHERE map_index <> -1)
       OR EXISTS (SELECT 1 FROM version_tasks WHERE map IS NOT NULL) THEN
        RAISE EXCEPTION 'cannot downgrade below 0012: batches ran mapped tasks'
            USING HINT = 'the old schema keeps one task_log row per (batch, task)';
    END IF;
END $$
"""

DOWNGRADE = [
    REFUSE_DOWNGRADE,
    _replacing(V10.ADVANCE_CHILDREN),
    _replacing(V10.BATCH_OUTCOME),
    "DROP FUNCTION dagrelay_parent_outputs(bigint, text, integer)",
    V10.PARENT_OUTPUTS,
    "DROP FUNCTION dagrelay_pipeline_version(text, timestamptz)",
    V10.PIN_FUNCTION,
    "DROP FUNCTION dagrelay_run_task_message(text, text, text, integer)",
    "DROP TABLE map_groups",
    "ALTER TABLE task_log DROP CONSTRAINT task_log_batch_task_key",
    "ALTER TABLE task_log ADD CONSTRAINT task_log_batch_task_key UNIQUE (batch_id, task_id)",
    "ALTER TABLE task_log DROP COLUMN item",
    "ALTER TABLE task_log DROP COLUMN map_index",
    "ALTER TABLE version_tasks DROP COLUMN map",
    "ALTER TABLE tasks DROP COLUMN map",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
