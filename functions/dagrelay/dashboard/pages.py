"""The pages around a batch and the messages: a task in a batch, the batch's Gantt chart, the
rejected messages, the dead letters, and what an operator's action published."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from markupsafe import Markup

from dagrelay.dashboard import asset_graph, parts, svg
from dagrelay.dashboard.parts import Ops, link, pill, url, when
from dagrelay.dashboard.render import (
    batch_tabs,
    crumbs,
    items_badge,
    legend,
    live_attrs,
    page,
    version_text,
)
from dagrelay.states import TaskStatus
from dagrelay.store import reads

Row = dict[str, Any]


def task_page(detail: Row, batch: Row, base: str, ops: Ops | None = None) -> str:
    p, b, task = detail["pipeline"], detail["batch_id"], detail["task"]
    body = Markup(
        "{crumbs}<h1>{task} {status}</h1>{actions}{facts}<h2>Params</h2>{params}"
        "<h2>Output</h2>{output}{error}{items}<h2>Attempts</h2>{attempts}{tracebacks}"
    ).format(
        crumbs=crumbs(base, p, link(url(base, "batches", p, b), b)),
        task=task,
        status=pill(detail["status"]),
        actions=_task_actions(base, ops, detail),
        facts=_task_facts(detail, base),
        params=_params(detail),
        output=parts.pre(detail["output"]),
        error=Markup("<h2>Error</h2>{}").format(parts.error(detail["error"]))
        if detail["error"]
        else Markup(""),
        items=_items(detail.get("items")),
        attempts=_attempt_table(detail["attempts"]),
        tracebacks=_tracebacks(detail["attempts"]),
    )
    return page(f"{task} · {p} / {b}", body, base, ops, attrs=live_attrs(base, batch, detail))


def _items(items: Row | None) -> Markup:
    if items is None:
        return Markup("")
    rows = [
        [
            i["map_index"],
            pill(i["status"]),
            i["attempt"],
            parts.pre(i["item"]),
            when(i["started_at"]),
            when(i["finished_at"]),
            parts.error(i["error"]),
        ]
        for i in items["instances"]
    ]
    headers = ["Index", "Status", "Attempts", "Item", "Started", "Finished", "Error"]
    return Markup("<h2>Items {}</h2>{}").format(
        items_badge(items["group"]), parts.table(headers, rows, "No instances.")
    )


def _task_facts(detail: Row, base: str) -> Markup:
    p, b = detail["pipeline"], detail["batch_id"]

    def tasks(names: list[str]) -> Markup:
        if not names:
            return parts.NOTHING
        return Markup(", ").join(link(url(base, "batches", p, b, "tasks", n), n) for n in names)

    return parts.facts(
        [
            ("Batch", link(url(base, "batches", p, b), f"{p} / {b}")),
            ("Version", version_text(detail["version"])),
            ("Handler", Markup("<code>{}</code>").format(detail["handler"])),
            ("Trigger rule", detail["trigger_rule"]),
            ("Status", pill(detail["status"]) + Markup(" ") + reads.waiting(detail)),
            ("Attempts", detail["attempt"]),
            ("Started", when(detail["started_at"])),
            ("Finished", when(detail["finished_at"])),
            ("Next attempt", when(detail["next_attempt_at"])),
            ("Root cause", tasks([detail["root_cause_task"]] if detail["root_cause_task"] else [])),
            ("Upstream", tasks(detail["parents"])),
            ("Downstream", tasks(detail["children"])),
        ]
    )


def _params(detail: Row) -> Markup:
    resolved = (
        parts.pre(detail["resolved_params"])
        if detail["resolve_error"] is None
        else parts.error(detail["resolve_error"])
    )
    return Markup(
        '<div class="two"><div><h3>As defined</h3>{}</div>'
        "<div><h3>Resolved for this batch</h3>{}</div></div>"
    ).format(parts.pre(detail["params"]), resolved)


def _task_actions(base: str, ops: Ops | None, detail: Row) -> Markup:
    if ops is None or detail["status"] is None:
        return Markup("")
    key = {"pipeline": detail["pipeline"], "batch_id": detail["batch_id"], "task": detail["task"]}
    return Markup('<div class="actions">{}{}</div>').format(
        parts.action_form(base, ops, "rerun", key, "Rerun this task"),
        parts.action_form(
            base, ops, "rerun", key | {"downstream": "1"}, "Rerun with its downstream"
        ),
    )


def _attempt_table(attempts: list[Row]) -> Markup:
    rows = [
        [
            Markup('<span class="run">run {}</span>').format(a["run"]),
            Markup("attempt {}").format(a["attempt"]),
            pill(a["outcome"] or TaskStatus.PROCESSING),
            when(a["started_at"]),
            when(a["finished_at"]),
            a["worker"] or parts.NOTHING,
            parts.error(a["error"]),
        ]
        for a in attempts
    ]
    headers = ["Run", "Attempt", "Outcome", "Started", "Finished", "Worker", "Error"]
    return parts.table(headers, rows, "No attempt has started yet.")


def _tracebacks(attempts: list[Row]) -> Markup:
    shown = [a for a in attempts if a["traceback"]]
    if not shown:
        return Markup("")
    return Markup("<h2>Tracebacks</h2>{}").format(
        Markup("").join(
            Markup(
                '<details class="traceback"{}><summary>run {} · attempt {}</summary>{}</details>'
            ).format(
                Markup(" open") if a is shown[-1] else Markup(""),
                a["run"],
                a["attempt"],
                parts.pre(a["traceback"], "error"),
            )
            for a in shown
        )
    )


def gantt_page(detail: Row, base: str, now: datetime, ops: Ops | None = None) -> str:
    batch = detail["batch"]
    p, b = batch["pipeline"], batch["batch_id"]
    body = Markup(
        '{crumbs}<h1>{b} {status}</h1>{tabs}{legend}<div class="card scroll">{chart}</div>'
    ).format(
        crumbs=crumbs(base, p),
        b=b,
        status=pill(batch["status"]),
        tabs=batch_tabs(base, p, b, "gantt"),
        legend=legend(),
        chart=svg.gantt(detail["attempts"], now),
    )
    return page(f"Gantt · {p} / {b}", body, base, ops, attrs=live_attrs(base, batch))


def _message_rows(rows: list[Row], base: str, dead: bool) -> list[list[Any]]:
    shown = []
    for r in rows:
        where: Any = parts.NOTHING
        if dead and r["pipeline"] and r["batch_id"]:
            where = link(
                url(base, "batches", r["pipeline"], r["batch_id"]),
                f"{r['pipeline']} / {r['batch_id']}",
            )
        cells: list[Any] = [
            when(r["received_at"]),
            Markup('<span class="reason">{}</span>').format(r["reason"]),
        ]
        if dead:
            cells += [
                r["action"] or parts.NOTHING,
                where,
                r["task"] or parts.NOTHING,
                r["delivery_attempts"],
            ]
        cells += [
            Markup('<pre class="payload">{}</pre>').format(r["preview"])
            if r["preview"]
            else parts.NOTHING,
            Markup("{} B").format(r["payload_bytes"]),
            Markup('<code class="sha" title="{}">{}…</code>').format(
                r["payload_sha256"], r["payload_sha256"][:12]
            ),
            parts.params(r["attributes"]),
        ]
        shown.append(cells)
    return shown


def rejected_page(data: Row, base: str, ops: Ops | None = None) -> str:
    headers = ["Received", "Reason", "Payload (decoded)", "Size", "SHA-256", "Attributes"]
    body = Markup(
        '<h1>Rejected messages</h1><p class="muted">Messages the router could not accept '
        "(malformed, unknown action, invalid fields): recorded with the reason and acknowledged, "
        "never retried. Newest first.</p>{}"
    ).format(
        parts.table(
            headers, _message_rows(data["rejected"], base, False), "No message was rejected."
        )
    )
    return page("Rejected messages", body, base, ops)


def dead_letters_page(data: Row, base: str, ops: Ops | None = None) -> str:
    headers = [
        "Received",
        "Reason",
        "Action",
        "Batch",
        "Task",
        "Deliveries",
        "Payload (decoded)",
        "Size",
        "SHA-256",
        "Attributes",
    ]
    body = Markup(
        '<h1>Dead letters</h1><p class="muted">Messages Pub/Sub gave up delivering after its '
        "retries, forwarded to the dead-letter topic and recorded here. Newest first.</p>{}"
    ).format(
        parts.table(headers, _message_rows(data["dead_letters"], base, True), "No dead letters.")
    )
    return page("Dead letters", body, base, ops)


def assets_page(assets: list[Row], schedules: list[Row], base: str, ops: Ops | None = None) -> str:
    """The asset graph across pipelines, every asset and every asset schedule."""

    def names(values: list[str] | None) -> str:
        return ", ".join(values or ()) or "-"

    asset_rows = [
        [
            a["asset"],
            names(a["producers"]),
            names(a["consumers"]),
            a["events"],
            when(a["last_updated_at"]),
            link(url(base, "batches", a["last_pipeline"], a["last_batch_id"]), a["last_batch_id"])
            if a["last_batch_id"]
            else "-",
        ]
        for a in assets
    ]
    schedule_rows = [
        [
            link(url(base, "pipelines", s["pipeline"]), s["pipeline"]),
            names(s["assets"]),
            names(s["pending"]),
            s["batch_id_template"],
            s["runs"],
            link(url(base, "batches", s["pipeline"], s["last_batch_id"]), s["last_batch_id"])
            if s["last_batch_id"]
            else "-",
            "paused" if s["paused"] else parts.error(s["last_error"]) or "active",
        ]
        for s in schedules
    ]
    body = Markup(
        '<h1>Assets</h1><p class="muted">A pipeline points to the assets its tasks update; an '
        "asset to the pipelines it starts (on_assets) once every asset they wait for was "
        "updated.</p>{graph}<h2>Assets</h2>{assets}<h2>Asset schedules</h2>{schedules}"
    ).format(
        graph=asset_graph.svg(assets, base),
        assets=parts.table(
            ["Asset", "Updated by", "Waited for by", "Events", "Last update", "By batch"],
            asset_rows,
            "No asset: declare them with updates: on a task.",
        ),
        schedules=parts.table(
            ["Pipeline", "Waits for", "Pending", "Batch id", "Runs", "Last batch", "State"],
            schedule_rows,
            "No asset schedule: declare one with on_assets: on a pipeline.",
        ),
    )
    return page("Assets", body, base, ops)


def published_page(action: str, messages: list[Row], back: str, base: str, ops: Ops) -> str:
    items = Markup("").join(Markup("<li>{}</li>").format(parts.params(m)) for m in messages)
    body = Markup(
        '<h1>Published</h1><p class="notice" data-published="{n}">{action}: {n} message{s} '
        'published to the events topic.</p><ul class="published">{items}</ul><p>{back}</p>'
    ).format(
        action=action,
        n=len(messages),
        s="" if len(messages) == 1 else "s",
        items=items,
        back=link(back, "Back"),
    )
    return page("Published", body, base, ops)
