"""The dependency guard in time linear in a pipeline's edges, and safe at every isolation level.

The cycle check is a reachability search over a set (a recursive CTE with UNION: each task is
visited once) from the new edge's child looking for its parent; the path for the error message is
walked back only when a cycle is found. Every edge insert also bumps its pipeline's row in
``pipeline_edge_writes``: two transactions adding edges to one pipeline then write the same row,
so at REPEATABLE READ and SERIALIZABLE the later one gets a serialization failure (40001) instead
of closing a cycle neither of them could see; at READ COMMITTED it waits, then checks against the
committed edges. Downgrade restores the guard of revision 0001 and drops the table.

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

EDGE_WRITES = """
CREATE TABLE pipeline_edge_writes (
    pipeline text PRIMARY KEY,
    writes   bigint NOT NULL DEFAULT 0
)
"""

# The path from the new child down to the new parent, walked backwards from the parent through
# parents that the child reaches (a jsonb object used as a set of task ids). The graph is acyclic
# before the new edge, so every step moves up and the walk ends at the child; the step bound only
# guards against a graph made cyclic behind the guard's back (session_replication_role).
CYCLE_PATH = r"""
CREATE FUNCTION dagrelay_cycle_path(p_child integer, p_parent integer) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    reached jsonb;
    size    bigint;
    cur     integer := p_parent;
    path    integer[] := ARRAY[p_parent];
BEGIN
    WITH RECURSIVE down(task_id) AS (
        SELECT p_child
        UNION
        SELECT d.child_task_id
        FROM down, LATERAL (SELECT child_task_id FROM task_dependencies
                            WHERE parent_task_id = down.task_id OFFSET 0) d
    )
    SELECT jsonb_object_agg(task_id::text, true), count(*) INTO reached, size FROM down;
    WHILE cur <> p_child AND cardinality(path) <= size LOOP
        SELECT d.parent_task_id INTO cur
        FROM task_dependencies d
        WHERE d.child_task_id = cur AND reached ? d.parent_task_id::text
        ORDER BY d.parent_task_id
        LIMIT 1;
        path := cur || path;
    END LOOP;
    RETURN (SELECT string_agg(t.name, ' -> ' ORDER BY u.ord)
            FROM unnest(path) WITH ORDINALITY AS u(task_id, ord)
            JOIN tasks t ON t.task_id = u.task_id);
END $$
"""

GUARD = r"""
CREATE OR REPLACE FUNCTION dagrelay_guard_dependency() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    child  tasks%ROWTYPE;
    parent tasks%ROWTYPE;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'dependency "%" -> "%" is immutable: delete it and insert the new edge',
            (SELECT name FROM tasks WHERE task_id = OLD.parent_task_id),
            (SELECT name FROM tasks WHERE task_id = OLD.child_task_id)
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT * INTO child FROM tasks WHERE task_id = NEW.child_task_id;
    SELECT * INTO parent FROM tasks WHERE task_id = NEW.parent_task_id;
    IF child.task_id IS NULL OR parent.task_id IS NULL THEN
        RETURN NEW;  -- the foreign keys report the missing task
    END IF;
    IF child.task_id = parent.task_id THEN
        RAISE EXCEPTION 'task "%" cannot depend on itself', child.name
            USING ERRCODE = 'check_violation';
    END IF;
    IF child.pipeline <> parent.pipeline THEN
        RAISE EXCEPTION 'dependency "%" -> "%" crosses pipelines ("%" and "%")',
            parent.name, child.name, parent.pipeline, child.pipeline
            USING ERRCODE = 'check_violation';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('dagrelay.task_dependencies'), hashtext(child.pipeline));
    -- Concurrent edge inserts of one pipeline write this row: at REPEATABLE READ and SERIALIZABLE
    -- the later transaction fails to serialize rather than check against a stale snapshot.
    INSERT INTO pipeline_edge_writes AS w (pipeline, writes) VALUES (child.pipeline, 1)
    ON CONFLICT (pipeline) DO UPDATE SET writes = w.writes + 1;
    -- A cycle exists if the new parent is already downstream of the new child. Each task is
    -- visited once (UNION) through the parent index (OFFSET 0 keeps the lookup per task: a hash
    -- join would scan every edge of the table at each level of the search).
    IF EXISTS (
        WITH RECURSIVE down(task_id) AS (
            SELECT child.task_id
            UNION
            SELECT d.child_task_id
            FROM down, LATERAL (SELECT child_task_id FROM task_dependencies
                                WHERE parent_task_id = down.task_id OFFSET 0) d
        )
        SELECT 1 FROM down WHERE task_id = parent.task_id
    ) THEN
        RAISE EXCEPTION 'dependency "%" -> "%" would create a cycle: % -> %',
            parent.name, child.name, dagrelay_cycle_path(child.task_id, parent.task_id),
            child.name
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$
"""

# Revision 0001's guard, restored by the downgrade.
OLD_GUARD = r"""
CREATE OR REPLACE FUNCTION dagrelay_guard_dependency() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    child  tasks%ROWTYPE;
    parent tasks%ROWTYPE;
    cycle  text;
BEGIN
    SELECT * INTO child FROM tasks WHERE task_id = NEW.child_task_id;
    SELECT * INTO parent FROM tasks WHERE task_id = NEW.parent_task_id;
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'dependency "%" -> "%" is immutable: delete it and insert the new edge',
            (SELECT name FROM tasks WHERE task_id = OLD.parent_task_id),
            (SELECT name FROM tasks WHERE task_id = OLD.child_task_id)
            USING ERRCODE = 'check_violation';
    END IF;
    IF child.task_id IS NULL OR parent.task_id IS NULL THEN
        RETURN NEW;  -- the foreign keys report the missing task
    END IF;
    IF child.task_id = parent.task_id THEN
        RAISE EXCEPTION 'task "%" cannot depend on itself', child.name
            USING ERRCODE = 'check_violation';
    END IF;
    IF child.pipeline <> parent.pipeline THEN
        RAISE EXCEPTION 'dependency "%" -> "%" crosses pipelines ("%" and "%")',
            parent.name, child.name, parent.pipeline, child.pipeline
            USING ERRCODE = 'check_violation';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('dagrelay.task_dependencies'), hashtext(child.pipeline));
    -- A cycle exists if the new parent is already downstream of the new child.
    WITH RECURSIVE down(task_id, path) AS (
        SELECT child.task_id, ARRAY[child.task_id]
        UNION ALL
        SELECT d.child_task_id, down.path || d.child_task_id
        FROM task_dependencies d JOIN down ON d.parent_task_id = down.task_id
        WHERE d.child_task_id <> ALL (down.path)
    )
    SELECT string_agg(t.name, ' -> ' ORDER BY u.ord) INTO cycle
    FROM (SELECT path FROM down WHERE task_id = parent.task_id LIMIT 1) p,
         unnest(p.path) WITH ORDINALITY AS u(task_id, ord)
    JOIN tasks t ON t.task_id = u.task_id;
    IF cycle IS NOT NULL THEN
        RAISE EXCEPTION 'dependency "%" -> "%" would create a cycle: % -> %',
            parent.name, child.name, cycle, child.name
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$
"""


def upgrade() -> None:
    for statement in (EDGE_WRITES, CYCLE_PATH, GUARD):
        op.execute(statement)


def downgrade() -> None:
    for statement in (
        OLD_GUARD,
        "DROP FUNCTION dagrelay_cycle_path(integer, integer)",
        "DROP TABLE pipeline_edge_writes",
    ):
        op.execute(statement)
