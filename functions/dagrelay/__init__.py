"""dagrelay: a serverless, database-driven DAG engine for Google Cloud."""

from __future__ import annotations

__version__ = "0.1.0"
