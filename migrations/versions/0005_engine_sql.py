"""The engine's shared SQL as versioned functions: the run_task message, the rule that a batch
is finished, and the fan-in/fan-out cascade settled inside PostgreSQL (one call per completion
however many levels of children can never run); and the lease by which the outbox relay claims
rows instead of holding their locks while it publishes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The one definition of a run_task message (payload and attributes); every statement that
# writes one joins it LATERAL. Inlined by the planner (a single SELECT, IMMUTABLE).
RUN_TASK_MESSAGE = """
CREATE FUNCTION dagrelay_run_task_message(
    p_pipeline text, p_batch_id text, p_task text, OUT payload jsonb, OUT attributes jsonb
) LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object('action', 'run_task', 'pipeline', p_pipeline,
                              'batch_id', p_batch_id, 'task', p_task),
           jsonb_build_object('action', 'run_task')
$$
"""

# When a batch is finished: NULL while a task is open (NEW, PROCESSING, RETRY), else FAILED if
# any task failed, else SUCCESS. plpgsql so its plans are cached per session.
BATCH_OUTCOME = """
CREATE FUNCTION dagrelay_batch_outcome(p_pipeline text, p_batch_id text)
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
    RETURN 'SUCCESS';
END
$$
"""

# The fan-in/fan-out step, repeated until it settles. Given parents that just reached a
# terminal state, one statement per level: count their outcomes into their children's
# counters (rows locked in task_id order, so concurrent completions never deadlock), decide
# each child's trigger rule from the counters, create the children whose rule is now decided
# (exactly once: ON CONFLICT DO NOTHING), and write a run_task message for each child that will
# run. Children that can never run (UPSTREAM_FAILED, SKIPPED) are terminal at birth: they are
# the next level's parents, in the same transaction. Returns every row created and every
# message written, as JSON arrays.
ADVANCE_CHILDREN = """
CREATE FUNCTION dagrelay_advance_children(
    p_pipeline text, p_batch_id text, p_parent_ids integer[], p_outcomes task_status[],
    p_root_causes bigint[], p_topic text, p_now timestamptz,
    OUT created_tasks jsonb, OUT created_messages jsonb
) LANGUAGE plpgsql AS $$
DECLARE
    level_tasks jsonb;
    level_messages jsonb;
BEGIN
    created_tasks := '[]';
    created_messages := '[]';
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
            SELECT d.child_task_id AS task_id,
                   count(*) FILTER (WHERE f.outcome = 'SUCCESS') AS succeeded,
                   count(*) FILTER (WHERE f.outcome IN ('ERROR', 'UPSTREAM_FAILED')) AS failed,
                   count(*) FILTER (WHERE f.outcome = 'SKIPPED') AS skipped,
                   min(f.root_cause) FILTER (WHERE f.outcome IN ('ERROR', 'UPSTREAM_FAILED'))
                       AS root_cause
            FROM finished f JOIN task_dependencies d ON d.parent_task_id = f.task_id
            GROUP BY d.child_task_id
        ),
        locked AS (
            SELECT c.task_id
            FROM task_fanin c
            WHERE c.batch_id = p_batch_id AND c.task_id IN (SELECT task_id FROM deltas)
            ORDER BY c.task_id
            FOR UPDATE
        ),
        counted AS (
            UPDATE task_fanin c
            SET succeeded = c.succeeded + x.succeeded,
                failed = c.failed + x.failed,
                skipped = c.skipped + x.skipped,
                root_cause_log_id = LEAST(c.root_cause_log_id, x.root_cause)
            FROM deltas x, locked l
            WHERE c.batch_id = p_batch_id AND c.task_id = x.task_id AND l.task_id = x.task_id
            RETURNING c.pipeline, c.task_id, c.parents, c.succeeded, c.failed, c.skipped,
                      c.root_cause_log_id
        ),
        decided AS (
            SELECT c.pipeline, c.task_id, t.name, t.enabled, c.root_cause_log_id,
                   dagrelay_trigger_decision(t.trigger_rule, c.parents, c.succeeded, c.failed,
                                             c.skipped) AS decision
            FROM counted c JOIN tasks t ON t.task_id = c.task_id
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
            JOIN tasks t ON t.task_id = c.task_id
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

UPGRADE = [
    RUN_TASK_MESSAGE,
    BATCH_OUTCOME,
    ADVANCE_CHILDREN,
    # The relay claims rows for a while instead of holding their locks while it publishes.
    "ALTER TABLE outbox ADD COLUMN relay_lease_until timestamptz",
]

ADVANCE_ARGS = "text, text, integer[], task_status[], bigint[], text, timestamptz"
DOWNGRADE = [
    "ALTER TABLE outbox DROP COLUMN relay_lease_until",
    f"DROP FUNCTION dagrelay_advance_children({ADVANCE_ARGS})",
    "DROP FUNCTION dagrelay_batch_outcome(text, text)",
    "DROP FUNCTION dagrelay_run_task_message(text, text, text)",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
