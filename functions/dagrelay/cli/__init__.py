"""The ``dagrelay`` console script.

    dagrelay db upgrade [--revision head]                          (define)
    dagrelay pipeline validate FILE.yaml                           (define)
    dagrelay pipeline apply FILE.yaml [--prune] [--dry-run]        (define)
    dagrelay build-function [--project DIR]                        (define)
    dagrelay init DIR [--terraform-module PATH|URL]
    dagrelay trigger PIPELINE BATCH_ID [--param k=v ...] [--start-task NAME]
                     [--if-exists fail|ignore] [--no-check] [--wait [--timeout S]]
    dagrelay validate [FILES...]
    dagrelay signal KEY [--payload JSON] [--signal-id ID]
    dagrelay pipeline export PIPELINE [-o FILE]                    (export)
    dagrelay pipeline history PIPELINE                             (versions)
    dagrelay pipeline diff PIPELINE A B                            (versions)
    dagrelay backfill PIPELINE --from DATE --to DATE [--reprocess none|failed|all]
                      [--latest] [--max-concurrent N] [--wait] [--dry-run]
    dagrelay rerun BATCH TASK [--downstream] [--latest] [--pipeline P]
    dagrelay cancel BATCH [--pipeline P]
    dagrelay resume BATCH [--pipeline P]                           (cancel)
    dagrelay status [BATCH] [--pipeline P] [--json] [--wait [--timeout S]]
    dagrelay history BATCH TASK [--traceback] [--pipeline P]
    dagrelay explain BATCH [--pipeline P]
    dagrelay rejected [--since AGE|TIME] [--limit N] [--action A] [--json]
    dagrelay assets [--json]
    dagrelay schedule list | pause PIPELINE | resume PIPELINE     (schedule)
    dagrelay pool set NAME --slots N [--description T] | list     (pool)
    dagrelay local up [--project DIR] | down | demo                (local: the `local` extra)

A batch id is unique per pipeline only: a verb given an id that several pipelines use refuses
(exit code 2), naming them, until --pipeline says which.

One module per verb (named after it unless noted). ``define`` and ``trigger`` register their
commands where they are defined; the operator's verbs are registered below, in the order
``dagrelay --help`` lists them. The decisions behind them (plans, rerun targets, explanations)
are pure functions in ``dagrelay.ops.verbs``.

Settings come from ``dagrelay.config`` (``DATABASE_URL``, ``DAGRELAY_PROJECT_ID``,
``DAGRELAY_EVENTS_TOPIC``, ...). A dagrelay error is one line per problem on stderr and exit
code 2; an unreachable database is exit code 1.
"""

from __future__ import annotations

# define's commands come first in `dagrelay --help`, then trigger's (backfill imports trigger).
from dagrelay.cli import define

# isort: split
from dagrelay.cli import (
    assets,
    backfill,
    cancel,
    explain,
    export,
    history,
    init,
    local,
    pool,
    rejected,
    rerun,
    schedule,
    signal,
    status,
    trigger,
    validate,
    versions,
)
from dagrelay.cli.app import app, pipeline_app

app.command()(init.init)
app.command()(validate.validate)
pipeline_app.command("export")(export.pipeline_export)
pipeline_app.command("history")(versions.pipeline_history)
pipeline_app.command("diff")(versions.pipeline_diff)
app.command()(backfill.backfill)
app.command()(rerun.rerun)
app.command()(cancel.cancel)
app.command()(cancel.resume)
app.command()(status.status)
app.command()(history.history)
app.command()(explain.explain)
app.command()(rejected.rejected)
app.command()(assets.assets)
app.command()(signal.signal)

__all__ = ["app", "define", "local", "pool", "schedule", "trigger"]
