"""Files the tests share."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout
FIXTURES = ROOT / "tests" / "fixtures"
# The engine-level example (python handlers): monthly_profit without BigQuery.
PYTHON_MONTHLY_PROFIT = FIXTURES / "pipelines" / "monthly_profit.yaml"
