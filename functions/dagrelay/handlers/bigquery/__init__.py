"""The ``bigquery.*`` handlers and their client plumbing (imported by the first BigQuery task)."""
