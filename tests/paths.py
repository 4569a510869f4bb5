"""Files the tests share."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The engine-level example (python handlers): monthly_profit without BigQuery.
PYTHON_MONTHLY_PROFIT = FIXTURES / "pipelines" / "monthly_profit.yaml"
