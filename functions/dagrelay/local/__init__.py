"""The local stack: dagrelay's whole system on one machine (``dagrelay local up|down|demo``).

The Pub/Sub emulator, PostgreSQL, stand-ins for GCS and BigQuery, and the router under
functions-framework behind push subscriptions. It ships in the package behind the ``local``
extra (``pip install 'dagrelay[local]'``) and never in the function archive
(``dagrelay.ops.packaging``); ARCHITECTURE.md, "Local stack"."""
