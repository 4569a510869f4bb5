"""The ``dagrelay`` console script.

    dagrelay db upgrade [--revision head]
    dagrelay pipeline validate FILE.yaml
    dagrelay pipeline apply FILE.yaml [--prune] [--dry-run]
    dagrelay trigger PIPELINE BATCH_ID [--param k=v ...] [--start-task NAME]
    dagrelay status [BATCH_ID] [--pipeline P] [--json] [--wait]
    dagrelay schedule list | pause PIPELINE | resume PIPELINE
    dagrelay validate | backfill | rerun | cancel | history | explain | pipeline export
             (the operator's commands: dagrelay.cli.operate)

Settings come from ``dagrelay.config`` (``DATABASE_URL``, ``DAGRELAY_PROJECT_ID``,
``DAGRELAY_EVENTS_TOPIC``, ...). A dagrelay error is one line per problem on stderr and exit
code 2; an unreachable database is exit code 1.
"""

from __future__ import annotations

from dagrelay.cli import define, operate, schedule, trigger
from dagrelay.cli.app import app

__all__ = ["app", "define", "operate", "schedule", "trigger"]
