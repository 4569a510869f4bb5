"""What the operator's commands share: the engine as the router builds it, and the
--pipeline option (the options for waiting are in ``dagrelay.cli.follow``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from dagrelay.cli.app import current_user, fail
from dagrelay.errors import DagrelayError

if TYPE_CHECKING:
    from dagrelay.engine.core import Engine
    from dagrelay.store.direct import Reader

PipelineOption = Annotated[
    str | None,
    typer.Option(help="The batch's pipeline (needed when pipelines share the batch id)."),
]


def batch_pipeline(conn: Reader, batch_id: str, pipeline: str | None) -> str:
    """The pipeline of batch ``batch_id``: ``pipeline`` when given, else the only pipeline with
    a batch of that id. A batch id is unique per pipeline only, so an id several pipelines use
    is refused (exit code 2) with their names, and an unknown one is exit code 1."""
    if pipeline is not None:
        return pipeline
    from dagrelay.store import reads

    found = reads.batch_pipelines(conn, batch_id)
    if not found:
        fail([f"no batch {batch_id!r}"], 1)
    if len(found) > 1:
        raise DagrelayError(
            f"batch {batch_id!r} exists in pipelines {', '.join(found)}: "
            "say which one with --pipeline"
        )
    return found[0]


def operator_engine() -> Engine:
    """The engine as the router builds it (``dagrelay.router.wiring``), without the router,
    publishing to Pub/Sub: the only path by which a verb loads the Pub/Sub client."""
    from dagrelay.config import get_settings
    from dagrelay.pubsub import PubSubPublisher
    from dagrelay.router.wiring import build_engine

    settings = get_settings()
    return build_engine(
        settings,
        publisher=PubSubPublisher(settings.project_id),
        worker_id=f"cli:{current_user()}",
    )
