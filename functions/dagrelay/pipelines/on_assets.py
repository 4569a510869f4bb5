"""The ``on_assets:`` section of a pipeline file: start a batch when the assets it names were
updated (ARCHITECTURE.md, "Assets"). Load and check it, write it into ``asset_schedules`` on
``pipeline apply``, read it back for ``pipeline export``.

    on_assets:
      assets: [bq://finance.sales, bq://finance.expenses]   # every one updated (per partition)
      batch_id_template: "{partition}"                      # default assets-{n}
      paused: false                                         # how a new schedule starts

It may stand beside a cron ``schedule:``: the two start batches independently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from dagrelay.engine import asset_rules
from dagrelay.errors import PipelineError
from dagrelay.store import assets as store


@dataclass(frozen=True)
class OnAssets:
    """A pipeline's asset schedule; the defaults are the asset_schedules table's."""

    assets: tuple[str, ...]
    batch_id_template: str = asset_rules.DEFAULT_TEMPLATE
    paused: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "assets", tuple(self.assets))  # a list given reads as a tuple


def from_yaml(data: Mapping[str, Any] | None, source: str) -> OnAssets | None:
    """The section as a spec (its keys and types already passed the JSON Schema), checked."""
    if data is None:
        return None
    spec = OnAssets(**data)
    check_spec(spec, source)
    return spec


def problems(spec: OnAssets) -> list[str]:
    found = [p for p in map(asset_rules.name_problem, spec.assets) if p is not None]
    if len(set(spec.assets)) != len(spec.assets):
        found.append("assets: a name is listed twice")
    try:
        asset_rules.check_template(spec.batch_id_template)
    except asset_rules.AssetError as exc:
        found.append(str(exc))
    return found


def check_spec(spec: OnAssets, source: str) -> None:
    if found := problems(spec):
        raise PipelineError([f"{source}: on_assets: {p}" for p in found])


def apply(
    conn: Connection, pipeline: str, spec: OnAssets | None, prune: bool, now: datetime
) -> str:
    """Write the file's section (in the caller's transaction). Without one, an existing asset
    schedule is left alone, or deleted with ``prune``."""
    if spec is None:
        if prune:
            return "deleted" if store.delete(conn, pipeline) else "none"
        return "none" if store.row(conn, pipeline) is None else "not in the file, left in place"
    values = {
        "pipeline": pipeline,
        "assets": list(spec.assets),
        "batch_id_template": spec.batch_id_template,
        "paused": spec.paused,
    }
    return store.upsert(conn, values, now)


def read(conn: Connection, pipeline: str) -> OnAssets | None:
    row = store.row(conn, pipeline)
    if row is None:
        return None
    return OnAssets(tuple(row["assets"]), row["batch_id_template"], row["paused"])


def to_yaml(spec: OnAssets) -> dict[str, Any]:
    """The section as ``export`` writes it: the assets, then the fields that are not defaults."""
    document: dict[str, Any] = {"assets": list(spec.assets)}
    for spec_field in fields(OnAssets):
        value = getattr(spec, spec_field.name)
        if spec_field.default is not MISSING and value != spec_field.default:
            document[spec_field.name] = value
    return document
