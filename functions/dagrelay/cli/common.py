"""What the operator's commands share: the engine as the router builds it, and the
--pipeline option (the options for waiting are in ``dagrelay.cli.follow``)."""

from __future__ import annotations

from typing import Annotated

import typer

from dagrelay.cli.app import current_user
from dagrelay.config import get_settings
from dagrelay.engine.core import Engine
from dagrelay.router.wiring import build_engine
from dagrelay.store.outbox import Publisher

PipelineOption = Annotated[str | None, typer.Option(help="The batch's pipeline.")]


def operator_engine(publisher: Publisher) -> Engine:
    """The engine as the router builds it (``dagrelay.router.wiring``), without the router."""
    return build_engine(get_settings(), publisher=publisher, worker_id=f"cli:{current_user()}")
