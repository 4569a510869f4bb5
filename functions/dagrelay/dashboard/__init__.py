"""The read-only web dashboard served by the HTTP ``status`` function: batches, their DAG
coloured by state with the root cause of a failure, pipelines, and a JSON API described by
``schema/openapi.json``. ``app.handle`` is the entry point."""
