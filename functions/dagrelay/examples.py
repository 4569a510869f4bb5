"""The callable of the engine-level test pipeline ``tests/fixtures/pipelines/monthly_profit.yaml``
(``python.call``), where python handlers stand in for the BigQuery work of the real example
``schema/pipelines/monthly_profit.yaml``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagrelay.errors import NonRetryableError
from dagrelay.handlers.registry import HandlerContext


def calculate_profit(context: HandlerContext) -> dict[str, Any]:
    """Profit of the batch from its parents' outputs: ``load_sales`` and ``load_expenses``
    each output ``{"total": <number>}``."""
    sales = _total(context.parent_outputs, "load_sales")
    expenses = _total(context.parent_outputs, "load_expenses")
    return {"profit": round(sales - expenses, 2), "batch_id": context.batch_id}


def _total(outputs: Mapping[str, Any], parent: str) -> float:
    output = outputs.get(parent)
    if not isinstance(output, Mapping) or not isinstance(output.get("total"), int | float):
        raise NonRetryableError(f"parent {parent!r} did not output a numeric 'total': {output!r}")
    return float(output["total"])
