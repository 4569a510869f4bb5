"""``dagrelay rejected [--since 1h] [--limit N] [--action A] [--json]``: the messages the router
rejected, newest first, with their reasons and their data decoded."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dagrelay.cli.app import reports_errors
from dagrelay.errors import DagrelayError
from dagrelay.ops import rejections

if TYPE_CHECKING:
    from rich.table import Table

    from dagrelay.store.direct import Reader

PAGE = 500
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
SINCE_HELP = "Only those received since: an age (30m, 2h, 7d) or a time (2024-03-01T12:00Z)."


@reports_errors
def rejected(
    since: Annotated[str | None, typer.Option(help=SINCE_HELP)] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 20,
    action: Annotated[
        str | None, typer.Option(help="Only messages with this action (e.g. start_batch).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
) -> None:
    """Messages the router rejected (malformed, unknown pipeline or task, ...), newest first:
    when, why, and the data — as JSON when it is JSON, else a safe preview."""
    from dagrelay.cli.render import json_default, time_text
    from dagrelay.store.direct import reading

    cutoff = parse_since(since, datetime.now(UTC))
    with reading() as conn:
        found = newest(conn, cutoff, limit, action)
    if as_json:
        typer.echo(json.dumps({"rejected": found}, default=json_default, indent=2))
        return
    if not found:
        typer.echo("no rejected messages" + (f" since {time_text(cutoff)}" if cutoff else ""))
        return
    from rich.console import Console

    Console().print(rejected_table(found))


def parse_since(since: str | None, now: datetime) -> datetime | None:
    """``30m``/``2h``/``7d`` before ``now``, or an ISO 8601 time (UTC if it has no zone)."""
    if since is None:
        return None
    if match := re.fullmatch(r"(\d+)([smhd])", since.strip()):
        return now - timedelta(**{UNITS[match[2]]: int(match[1])})
    try:
        when = datetime.fromisoformat(since)
    except ValueError:
        raise DagrelayError(
            f"--since {since!r} is neither an age (30m, 2h, 7d) nor an ISO 8601 time"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def newest(
    conn: Reader, since: datetime | None, limit: int, action: str | None
) -> list[dict[str, Any]]:
    """Up to ``limit`` rejections, newest first, decoded; ``action`` filters on the decoded
    action (the data's, else the attribute's), so pages are read until enough match."""
    from dagrelay.store import reads

    found: list[dict[str, Any]] = []
    before: int | None = None
    while len(found) < limit:
        rows = reads.rejected_page(conn, since=since, before_id=before, page=PAGE)
        for row in rows:
            decoded = rejections.decode(row["data"], row["attributes"], row["payload_bytes"])
            if rejections.matches(decoded, action):
                found.append(_shown(row, decoded))
        if len(rows) < PAGE:
            break
        before = rows[-1]["rejected_id"]
    return found[:limit]


def _shown(row: dict[str, Any], decoded: rejections.Decoded) -> dict[str, Any]:
    return {
        "received_at": row["received_at"],
        "message_id": row["message_id"],
        "action": decoded.action,
        "reason": row["reason"],
        "data_kind": decoded.kind,
        "data": decoded.text,
        "payload_bytes": row["payload_bytes"],
        "attributes": row["attributes"],
    }


def rejected_table(found: list[dict[str, Any]]) -> Table:
    from rich.table import Table
    from rich.text import Text

    from dagrelay.cli.render import time_text

    table = Table(title="rejected messages, newest first", title_justify="left")
    for column in ("received", "message id", "action", "reason", "data"):
        table.add_column(column, overflow="fold")
    for entry in found:
        data = rejections.Decoded(entry["data_kind"], entry["data"], entry["action"]).preview()
        if entry["data_kind"] != "json":
            data = f"({entry['data_kind']}, {entry['payload_bytes']} bytes) {data}"
        table.add_row(
            time_text(entry["received_at"], "%Y-%m-%d %H:%M:%S"),
            entry["message_id"] or "",
            entry["action"] or "",
            Text(entry["reason"], style="red"),
            Text(data),
        )
    return table
