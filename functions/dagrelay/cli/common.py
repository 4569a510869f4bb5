"""What the operator's commands share: the engine as the router builds it, and the options
for waiting."""

from __future__ import annotations

from typing import Annotated

import typer

from dagrelay.cli.trigger import current_user
from dagrelay.config import get_settings
from dagrelay.engine.core import Engine
from dagrelay.router.wiring import build_engine
from dagrelay.store.outbox import Publisher

DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_POLL_S = 2.0

Timeout = Annotated[
    float, typer.Option(min=0, help="Give up waiting after this many seconds (exit code 1).")
]
Poll = Annotated[float, typer.Option(min=0.01, help="Seconds between looks at the database.")]
PipelineOption = Annotated[str | None, typer.Option(help="The batch's pipeline.")]


def operator_engine(publisher: Publisher) -> Engine:
    """The engine as the router builds it (``dagrelay.router.wiring``), without the router."""
    return build_engine(get_settings(), publisher=publisher, worker_id=f"cli:{current_user()}")
