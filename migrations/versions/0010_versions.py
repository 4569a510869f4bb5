"""Pipeline versions: task names unique per pipeline, and every batch pinned to an immutable
snapshot of its pipeline's definition (pipeline_versions, version_tasks, version_edges).

History lives with the versions: task_log, task_fanin, task_attempts and batches no longer
reference the live tasks table, so a task can be removed from the live definition while the
batches that ran it keep showing it. Existing batches are pinned to a first version made from
the live rows at upgrade time (the only definition the old schema kept).

The downgrade is refused, with the reason, when the data cannot go back: two pipelines sharing
a task name, or history (task_log, task_attempts, task_fanin, batches.start_task_id) naming a
task no longer in the live tasks table.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLES = [
    """
    CREATE TABLE pipeline_versions (
        version_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        pipeline     text NOT NULL,
        version      integer NOT NULL,
        content_hash text NOT NULL,
        created_at   timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT pipeline_versions_number_key UNIQUE (pipeline, version),
        CONSTRAINT pipeline_versions_content_key UNIQUE (pipeline, content_hash),
        CONSTRAINT pipeline_versions_number_positive CHECK (version > 0)
    )
    """,
    """
    CREATE TABLE version_tasks (
        version_id        bigint NOT NULL REFERENCES pipeline_versions (version_id)
                          ON DELETE CASCADE,
        task_id           integer NOT NULL,
        name              text NOT NULL,
        handler           text NOT NULL,
        params            jsonb NOT NULL,
        trigger_rule      trigger_rule NOT NULL,
        max_retries       integer NOT NULL,
        retry_delay_s     integer NOT NULL,
        retry_backoff     double precision NOT NULL,
        retry_max_delay_s integer NOT NULL,
        timeout_s         integer NOT NULL,
        pool              text,
        enabled           boolean NOT NULL,
        PRIMARY KEY (version_id, task_id),
        CONSTRAINT version_tasks_name_key UNIQUE (version_id, name)
    )
    """,
    """
    CREATE TABLE version_edges (
        version_id     bigint NOT NULL,
        child_task_id  integer NOT NULL,
        parent_task_id integer NOT NULL,
        PRIMARY KEY (version_id, child_task_id, parent_task_id),
        FOREIGN KEY (version_id, child_task_id)
            REFERENCES version_tasks (version_id, task_id) ON DELETE CASCADE,
        FOREIGN KEY (version_id, parent_task_id)
            REFERENCES version_tasks (version_id, task_id) ON DELETE CASCADE
    )
    """,
    "CREATE INDEX version_edges_parent_idx ON version_edges (version_id, parent_task_id)",
]

# The live definition of a pipeline as one version: found by content hash (task ids are not
# content: a task deleted and inserted again unchanged is the same version), or stored with the
# next number. Returns NULL for a pipeline with no tasks. The live rows are read by one
# statement, so the hash and the stored rows are the same snapshot; the advisory lock keeps
# numbers dense and a content stored once when batches of one pipeline start together.
PIN_FUNCTION = r"""
CREATE FUNCTION dagrelay_pipeline_version(p_pipeline text, p_now timestamptz)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    live   jsonb;
    digest text;
    found  bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('dagrelay.pipeline_versions'), hashtext(p_pipeline));
    SELECT jsonb_build_object(
        'tasks', (SELECT jsonb_agg(jsonb_build_object(
                      'name', t.name, 'handler', t.handler, 'params', t.params,
                      'trigger_rule', t.trigger_rule, 'max_retries', t.max_retries,
                      'retry_delay_s', t.retry_delay_s, 'retry_backoff', t.retry_backoff,
                      'retry_max_delay_s', t.retry_max_delay_s, 'timeout_s', t.timeout_s,
                      'pool', t.pool, 'enabled', t.enabled) ORDER BY t.name)
                  FROM tasks t WHERE t.pipeline = p_pipeline),
        'edges', coalesce((SELECT jsonb_agg(jsonb_build_array(p.name, c.name)
                                            ORDER BY c.name, p.name)
                           FROM task_dependencies d
                           JOIN tasks c ON c.task_id = d.child_task_id
                           JOIN tasks p ON p.task_id = d.parent_task_id
                           WHERE c.pipeline = p_pipeline), '[]'::jsonb),
        'ids', (SELECT jsonb_object_agg(t.name, t.task_id)
                FROM tasks t WHERE t.pipeline = p_pipeline))
    INTO live;
    IF live -> 'tasks' IS NULL OR jsonb_typeof(live -> 'tasks') = 'null' THEN
        RETURN NULL;
    END IF;
    digest := encode(sha256(convert_to((live - 'ids')::text, 'UTF8')), 'hex');
    SELECT version_id INTO found FROM pipeline_versions
    WHERE pipeline = p_pipeline AND content_hash = digest;
    IF found IS NOT NULL THEN
        RETURN found;
    END IF;
    INSERT INTO pipeline_versions (pipeline, version, content_hash, created_at)
    SELECT p_pipeline, coalesce(max(v.version), 0) + 1, digest, p_now
    FROM pipeline_versions v WHERE v.pipeline = p_pipeline
    RETURNING version_id INTO found;
    INSERT INTO version_tasks (version_id, task_id, name, handler, params, trigger_rule,
                               max_retries, retry_delay_s, retry_backoff, retry_max_delay_s,
                               timeout_s, pool, enabled)
    SELECT found, (live -> 'ids' ->> s.name)::integer, s.name, s.handler, s.params,
           s.trigger_rule, s.max_retries, s.retry_delay_s, s.retry_backoff,
           s.retry_max_delay_s, s.timeout_s, s.pool, s.enabled
    FROM jsonb_to_recordset(live -> 'tasks') AS s(
        name text, handler text, params jsonb, trigger_rule trigger_rule, max_retries integer,
        retry_delay_s integer, retry_backoff double precision, retry_max_delay_s integer,
        timeout_s integer, pool text, enabled boolean);
    INSERT INTO version_edges (version_id, child_task_id, parent_task_id)
    SELECT found, (live -> 'ids' ->> (e ->> 1))::integer, (live -> 'ids' ->> (e ->> 0))::integer
    FROM jsonb_array_elements(live -> 'edges') AS e;
    RETURN found;
END $$
"""

# What a handler receives as parent_outputs: its parents in the batch's version.
PARENT_OUTPUTS = r"""
CREATE FUNCTION dagrelay_parent_outputs(p_version_id bigint, p_batch_id text, p_task_id integer)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_object_agg(pt.name, pl.output), '{}')
    FROM version_edges e
    JOIN version_tasks pt ON pt.version_id = e.version_id AND pt.task_id = e.parent_task_id
    JOIN task_log pl ON pl.batch_id = p_batch_id AND pl.task_id = e.parent_task_id
    WHERE e.version_id = p_version_id AND e.child_task_id = p_task_id AND pl.output IS NOT NULL
$$
"""

# The fan-in/fan-out cascade of 0005 on the batch's version: its edges decide the children, its
# tasks their names, trigger rules and enabled flags. ``locked`` carries the deltas, so counting
# joins one CTE to the counters' primary key (the edges of a version just stored have no
# statistics yet; a join of two CTE scans could go quadratic on a wide fan-out).
ADVANCE_CHILDREN = r"""
CREATE OR REPLACE FUNCTION dagrelay_advance_children(
    p_pipeline text, p_batch_id text, p_parent_ids integer[], p_outcomes task_status[],
    p_root_causes bigint[], p_topic text, p_now timestamptz,
    OUT created_tasks jsonb, OUT created_messages jsonb
) LANGUAGE plpgsql AS $$
DECLARE
    level_tasks jsonb;
    level_messages jsonb;
    v_version bigint;
BEGIN
    created_tasks := '[]';
    created_messages := '[]';
    SELECT version_id INTO v_version FROM batches
    WHERE pipeline = p_pipeline AND batch_id = p_batch_id;
    WHILE cardinality(p_parent_ids) > 0 LOOP
        WITH batch_running AS (
            SELECT 1 FROM batches
            WHERE pipeline = p_pipeline AND batch_id = p_batch_id AND status = 'RUNNING'
            FOR SHARE
        ),
        finished AS (
            SELECT f.task_id, f.outcome, NULLIF(f.root_cause, 0) AS root_cause
            FROM unnest(p_parent_ids, p_outcomes, p_root_causes) AS f(task_id, outcome, root_cause)
        ),
        deltas AS (
            SELECT e.child_task_id AS task_id,
                   count(*) FILTER (WHERE f.outcome = 'SUCCESS') AS succeeded,
                   count(*) FILTER (WHERE f.outcome IN ('ERROR', 'UPSTREAM_FAILED')) AS failed,
                   count(*) FILTER (WHERE f.outcome = 'SKIPPED') AS skipped,
                   min(f.root_cause) FILTER (WHERE f.outcome IN ('ERROR', 'UPSTREAM_FAILED'))
                       AS root_cause
            FROM finished f
            JOIN version_edges e ON e.version_id = v_version AND e.parent_task_id = f.task_id
            GROUP BY e.child_task_id
        ),
        locked AS (
            SELECT c.task_id, x.succeeded, x.failed, x.skipped, x.root_cause
            FROM task_fanin c JOIN deltas x ON x.task_id = c.task_id
            WHERE c.batch_id = p_batch_id
            ORDER BY c.task_id
            FOR UPDATE OF c
        ),
        counted AS (
            UPDATE task_fanin c
            SET succeeded = c.succeeded + l.succeeded,
                failed = c.failed + l.failed,
                skipped = c.skipped + l.skipped,
                root_cause_log_id = LEAST(c.root_cause_log_id, l.root_cause)
            FROM locked l
            WHERE c.batch_id = p_batch_id AND c.task_id = l.task_id
            RETURNING c.pipeline, c.task_id, c.parents, c.succeeded, c.failed, c.skipped,
                      c.root_cause_log_id
        ),
        decided AS (
            SELECT c.pipeline, c.task_id, t.name, t.enabled, c.root_cause_log_id,
                   dagrelay_trigger_decision(t.trigger_rule, c.parents, c.succeeded, c.failed,
                                             c.skipped) AS decision
            FROM counted c
            JOIN version_tasks t ON t.version_id = v_version AND t.task_id = c.task_id
        ),
        created AS (
            INSERT INTO task_log (pipeline, batch_id, task_id, status, created_at, finished_at,
                                  root_cause_log_id)
            SELECT d.pipeline, p_batch_id, d.task_id,
                   CASE WHEN d.decision <> 'RUN' THEN d.decision
                        WHEN d.enabled THEN 'NEW'
                        ELSE 'SKIPPED' END::task_status,
                   p_now,
                   CASE WHEN d.decision = 'RUN' AND d.enabled THEN NULL ELSE p_now END,
                   CASE WHEN d.decision = 'UPSTREAM_FAILED' THEN d.root_cause_log_id END
            FROM decided d
            WHERE d.decision IS NOT NULL AND EXISTS (SELECT 1 FROM batch_running)
            ON CONFLICT (batch_id, task_id) DO NOTHING
            RETURNING log_id, task_id, status, root_cause_log_id
        ),
        messages AS (
            INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
            SELECT p_topic, m.payload, m.attributes, p_now, p_now, c.log_id
            FROM created c
            JOIN version_tasks t ON t.version_id = v_version AND t.task_id = c.task_id
            CROSS JOIN LATERAL dagrelay_run_task_message(p_pipeline, p_batch_id, t.name) m
            WHERE c.status = 'NEW'
            RETURNING outbox_id, topic, payload, attributes, available_at
        )
        SELECT (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.log_id), '[]') FROM created c),
               (SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.outbox_id), '[]')
                FROM messages m)
        INTO level_tasks, level_messages;
        created_tasks := created_tasks || level_tasks;
        created_messages := created_messages || level_messages;
        SELECT coalesce(array_agg(t.task_id), '{}'), coalesce(array_agg(t.status), '{}'),
               coalesce(array_agg(coalesce(t.root_cause_log_id, 0)), '{}')
        INTO p_parent_ids, p_outcomes, p_root_causes
        FROM jsonb_to_recordset(level_tasks)
             AS t(task_id integer, status task_status, root_cause_log_id bigint)
        WHERE t.status <> 'NEW';
    END LOOP;
END
$$
"""

# When a batch is finished: NULL while a task is open, else FAILED if a task failed, else
# CANCELLED if a task is still CANCELLED (a cancelled batch rerun only in part never succeeds:
# what was cancelled did not run), else SUCCESS.
BATCH_OUTCOME = r"""
CREATE OR REPLACE FUNCTION dagrelay_batch_outcome(p_pipeline text, p_batch_id text)
RETURNS batch_status LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM task_log tl
               WHERE tl.batch_id = p_batch_id AND tl.pipeline = p_pipeline
                 AND tl.status IN ('NEW', 'PROCESSING', 'RETRY')) THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM task_log tl
               WHERE tl.batch_id = p_batch_id AND tl.pipeline = p_pipeline
                 AND tl.status IN ('ERROR', 'UPSTREAM_FAILED')) THEN
        RETURN 'FAILED';
    END IF;
    IF EXISTS (SELECT 1 FROM task_log tl
               WHERE tl.batch_id = p_batch_id AND tl.pipeline = p_pipeline
                 AND tl.status = 'CANCELLED') THEN
        RETURN 'CANCELLED';
    END IF;
    RETURN 'SUCCESS';
END
$$
"""


def _engine_sql() -> ModuleType:
    """Revision 0005, whose engine functions the downgrade puts back."""
    path = Path(__file__).with_name("0005_engine_sql.py")
    spec = importlib.util.spec_from_file_location("dagrelay_migration_0005", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _replacing(definition: str) -> str:
    return definition.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


OLD_PARENT_OUTPUTS = r"""
CREATE FUNCTION dagrelay_parent_outputs(p_batch_id text, p_task_id integer)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_object_agg(pt.name, pl.output), '{}')
    FROM task_dependencies d
    JOIN tasks pt ON pt.task_id = d.parent_task_id
    JOIN task_log pl ON pl.batch_id = p_batch_id AND pl.task_id = d.parent_task_id
    WHERE d.child_task_id = p_task_id AND pl.output IS NOT NULL
$$
"""

# Every pipeline that has tasks or batches gets its first version; a task that history names
# but that now lives in another pipeline (the old schema let a task move) is added to it, so
# every old row still has its task in its batch's version.
PIN_EXISTING = [
    """
    CREATE TEMPORARY TABLE dagrelay_pins ON COMMIT DROP AS
    SELECT p.pipeline, dagrelay_pipeline_version(p.pipeline, now()) AS version_id
    FROM (SELECT pipeline FROM tasks UNION SELECT pipeline FROM batches) p
    """,
    """
    INSERT INTO pipeline_versions (pipeline, version, content_hash)
    SELECT pipeline, 1, 'empty' FROM dagrelay_pins WHERE version_id IS NULL
    """,
    """
    UPDATE dagrelay_pins p SET version_id = v.version_id
    FROM pipeline_versions v WHERE p.version_id IS NULL AND v.pipeline = p.pipeline
    """,
    "ALTER TABLE batches ADD COLUMN version_id bigint REFERENCES pipeline_versions (version_id)",
    """
    UPDATE batches b SET version_id = p.version_id
    FROM dagrelay_pins p WHERE p.pipeline = b.pipeline
    """,
    """
    INSERT INTO version_tasks (version_id, task_id, name, handler, params, trigger_rule,
                               max_retries, retry_delay_s, retry_backoff, retry_max_delay_s,
                               timeout_s, pool, enabled)
    SELECT DISTINCT p.version_id, t.task_id, t.name, t.handler, t.params, t.trigger_rule,
           t.max_retries, t.retry_delay_s, t.retry_backoff, t.retry_max_delay_s, t.timeout_s,
           t.pool, t.enabled
    FROM (SELECT pipeline, task_id FROM task_log
          UNION SELECT pipeline, task_id FROM task_fanin) h
    JOIN dagrelay_pins p ON p.pipeline = h.pipeline
    JOIN tasks t ON t.task_id = h.task_id
    ON CONFLICT DO NOTHING
    """,
    "ALTER TABLE batches ALTER COLUMN version_id SET NOT NULL",
    "CREATE INDEX batches_version_idx ON batches (version_id)",
]

UPGRADE = [
    "ALTER TABLE tasks DROP CONSTRAINT tasks_name_key",
    "ALTER TABLE tasks ADD CONSTRAINT tasks_pipeline_name_key UNIQUE (pipeline, name)",
    *TABLES,
    PIN_FUNCTION,
    *PIN_EXISTING,
    # History no longer holds the live rows hostage.
    "ALTER TABLE task_log DROP CONSTRAINT task_log_task_id_fkey",
    "ALTER TABLE task_fanin DROP CONSTRAINT task_fanin_task_id_fkey",
    "ALTER TABLE task_attempts DROP CONSTRAINT task_attempts_task_id_fkey",
    "ALTER TABLE batches DROP CONSTRAINT batches_start_task_id_fkey",
    "DROP FUNCTION dagrelay_parent_outputs(text, integer)",
    PARENT_OUTPUTS,
    ADVANCE_CHILDREN,
    BATCH_OUTCOME,
]

# Refuse, naming what stands in the way, before changing anything.
REFUSE_DOWNGRADE = r"""
DO $$
DECLARE
    shared  text;
    missing text;
BEGIN
    SELECT string_agg(DISTINCT format('%s (%s)', name, pipelines), ', ') INTO shared
    FROM (SELECT name, string_agg(pipeline, ', ' ORDER BY pipeline) AS pipelines
          FROM tasks GROUP BY name HAVING count(*) > 1) s;
    IF shared IS NOT NULL THEN
        RAISE EXCEPTION 'cannot downgrade below 0010: task names are shared by pipelines: %', shared
            USING HINT = 'rename the tasks so every name is used by one pipeline';
    END IF;
    SELECT string_agg(DISTINCT format('%s/%s task_id %s', h.pipeline, h.batch_id, h.task_id),
                      ', ') INTO missing
    FROM (SELECT pipeline, batch_id, task_id FROM task_log
          UNION ALL SELECT pipeline, batch_id, task_id FROM task_fanin
          UNION ALL SELECT NULL, batch_id, task_id FROM task_attempts
          UNION ALL SELECT pipeline, batch_id, start_task_id FROM batches
                    WHERE start_task_id IS NOT NULL) h
    WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.task_id = h.task_id);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'cannot downgrade below 0010: history names tasks removed from the live '
                        'definition: %', missing
            USING HINT = 'the old schema keeps history only for live tasks';
    END IF;
END $$
"""

DOWNGRADE = [
    REFUSE_DOWNGRADE,
    "DROP FUNCTION dagrelay_parent_outputs(bigint, text, integer)",
    OLD_PARENT_OUTPUTS,
    """ALTER TABLE batches ADD CONSTRAINT batches_start_task_id_fkey
       FOREIGN KEY (start_task_id) REFERENCES tasks (task_id)""",
    """ALTER TABLE task_attempts ADD CONSTRAINT task_attempts_task_id_fkey
       FOREIGN KEY (task_id) REFERENCES tasks (task_id)""",
    """ALTER TABLE task_fanin ADD CONSTRAINT task_fanin_task_id_fkey
       FOREIGN KEY (task_id) REFERENCES tasks (task_id)""",
    """ALTER TABLE task_log ADD CONSTRAINT task_log_task_id_fkey
       FOREIGN KEY (task_id) REFERENCES tasks (task_id)""",
    "ALTER TABLE batches DROP COLUMN version_id",
    "DROP FUNCTION dagrelay_pipeline_version(text, timestamptz)",
    "DROP TABLE version_edges, version_tasks, pipeline_versions",
    "ALTER TABLE tasks DROP CONSTRAINT tasks_pipeline_name_key",
    "ALTER TABLE tasks ADD CONSTRAINT tasks_name_key UNIQUE (name)",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    engine_sql = _engine_sql()
    op.execute(REFUSE_DOWNGRADE)
    op.execute(_replacing(engine_sql.ADVANCE_CHILDREN))
    op.execute(_replacing(engine_sql.BATCH_OUTCOME))
    for statement in DOWNGRADE[1:]:
        op.execute(statement)
