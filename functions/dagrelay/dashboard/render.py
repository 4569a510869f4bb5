"""The HTML pages: self-contained (inline CSS, inline SVG, no script, nothing fetched), every
value from the database escaped (see ``parts``). Each page renders a ``model`` payload."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from dagrelay.dashboard import parts, svg
from dagrelay.dashboard.parts import link, pill, url, when

Row = dict[str, Any]
LEGEND = (
    "SUCCESS",
    "ERROR",
    "UPSTREAM_FAILED",
    "PROCESSING",
    "RETRY",
    "NEW",
    "SKIPPED",
    "CANCELLED",
    "PENDING",
)


def page(title: str, body: Markup, base: str, refresh_s: int | None = None) -> str:
    refresh = (
        Markup('<meta http-equiv="refresh" content="{}">').format(refresh_s)
        if refresh_s
        else Markup("")
    )
    return str(
        Markup(
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">{refresh}'
            "<title>{title} · dagrelay</title><style>{style}</style></head><body>"
            '<header class="top"><a class="brand" href="{home}">dagrelay</a>'
            '<a href="{home}">Batches</a></header><main>{body}</main></body></html>'
        ).format(refresh=refresh, title=title, style=parts.style(), home=url(base), body=body)
    )


def error_page(status: int, message: str, base: str) -> str:
    body = Markup("<h1>{}</h1><p>{}</p><p>{}</p>").format(
        status, message, link(url(base), "All batches")
    )
    return page(f"{status}", body, base)


def batches_page(data: Row, pipelines: list[str], selected: str | None, base: str) -> str:
    options = Markup("").join(
        Markup('<option value="{}"{}>{}</option>').format(
            p, Markup(" selected") if p == selected else Markup(""), p
        )
        for p in pipelines
    )
    form = Markup(
        '<form class="filter" method="get" action="{}"><label for="pipeline">Pipeline</label>'
        '<select id="pipeline" name="pipeline"><option value="">all</option>{}</select>'
        '<button type="submit">Filter</button></form>'
    ).format(url(base), options)
    body = Markup("<h1>Batches</h1>{}{}").format(form, _batch_table(data["batches"], base, True))
    return page("Batches", body, base)


def _batch_table(batches: list[Row], base: str, with_pipeline: bool) -> Markup:
    headers = ["Pipeline"] if with_pipeline else []
    headers += ["Batch", "Status", "Started", "Duration", "Tasks"]
    rows = []
    for b in batches:
        cells: list[Any] = [link(url(base, "pipelines", b["pipeline"]), b["pipeline"])]
        cells = cells if with_pipeline else []
        cells += [
            link(url(base, "batches", b["pipeline"], b["batch_id"]), b["batch_id"]),
            pill(b["status"]),
            when(b["created_at"]),
            parts.seconds(b["duration_s"]),
            parts.counts(b["task_counts"]),
        ]
        rows.append(cells)
    return parts.table(headers, rows, "No batches yet.")


def batch_page(detail: Row, base: str) -> str:
    batch = detail["batch"]
    crumbs = Markup('<div class="crumbs">{} / {}</div>').format(
        link(url(base), "Batches"),
        link(url(base, "pipelines", batch["pipeline"]), batch["pipeline"]),
    )
    statuses = {t["task"]: t["status"] for t in detail["tasks"]}
    causes = [c["task"] for c in detail["root_causes"]]
    graph = svg.graph(statuses, _edges(detail), statuses, causes, f"batch {batch['batch_id']}")
    body = Markup(
        "{crumbs}<h1>{title} {status}</h1>{facts}<h2>Graph</h2>{legend}"
        '<div class="card scroll">{graph}</div>{causes}<h2>Tasks</h2>{tasks}'
        "<h2>Attempts</h2>{attempts}{dead}"
    ).format(
        crumbs=crumbs,
        title=batch["batch_id"],
        status=pill(batch["status"]),
        facts=_batch_facts(batch),
        legend=Markup('<div class="legend">{}</div>').format(
            Markup("").join(pill(s) for s in LEGEND)
        ),
        graph=graph,
        causes=_root_causes(detail["root_causes"]),
        tasks=_task_table(detail["tasks"]),
        attempts=_attempt_table(detail["attempts"]),
        dead=_dead_letters(detail["dead_letters"]),
    )
    refresh = 5 if batch["status"] == "RUNNING" else None
    return page(f"{batch['pipeline']} / {batch['batch_id']}", body, base, refresh)


def _edges(detail: Row) -> list[tuple[str, str]]:
    return [(e["parent"], e["child"]) for e in detail["edges"]]


def _batch_facts(batch: Row) -> Markup:
    return parts.facts(
        [
            ("Pipeline", batch["pipeline"]),
            ("Version", str(batch["version"])),
            ("Status", pill(batch["status"])),
            ("Started", when(batch["created_at"])),
            ("Finished", when(batch["finished_at"])),
            ("Duration", parts.seconds(batch["duration_s"])),
            ("Triggered by", batch["triggered_by"]),
            ("Start task", batch["start_task"] or parts.NOTHING),
            ("Params", parts.params(batch["params"])),
            ("Tasks", parts.counts(batch["task_counts"])),
        ]
    )


def _root_causes(causes: list[Row]) -> Markup:
    if not causes:
        return Markup("")
    items = Markup("").join(
        Markup(
            '<div class="cause" data-root-cause="{task}"><p><strong>{task}</strong> failed '
            "({status}).</p>{error}<p>{took}</p></div>"
        ).format(
            task=c["task"],
            status=c["status"],
            error=parts.error(c["error"]),
            took=Markup("It took down {}: {}.").format(
                len(c["took_down"]), ", ".join(c["took_down"])
            )
            if c["took_down"]
            else "It took down no other task.",
        )
        for c in causes
    )
    return Markup("<h2>Root cause</h2>{}").format(items)


def _task_table(tasks: list[Row]) -> Markup:
    rows = [
        [
            Markup('<a id="task-{}"></a>{}').format(t["task"], t["task"]),
            pill(t["status"]),
            t["attempt"],
            when(t["started_at"]),
            parts.seconds(t["duration_s"]),
            t["root_cause_task"] or parts.NOTHING,
            parts.error(t["error"]),
        ]
        for t in tasks
    ]
    headers = ["Task", "Status", "Attempts", "Started", "Duration", "Root cause", "Error"]
    return parts.table(headers, rows, "This pipeline has no tasks.")


def _attempt_table(attempts: list[Row]) -> Markup:
    rows = [
        [
            a["task"],
            a["attempt"],
            pill(a["outcome"] or "PROCESSING"),
            when(a["started_at"]),
            when(a["finished_at"]),
            a["worker"] or parts.NOTHING,
            parts.error(a["error"]),
        ]
        for a in attempts
    ]
    headers = ["Task", "Attempt", "Outcome", "Started", "Finished", "Worker", "Error"]
    return parts.table(headers, rows, "No attempt has started yet.")


def _dead_letters(letters: list[Row]) -> Markup:
    if not letters:
        return Markup("")
    rows = [
        [when(d["received_at"]), d["action"], d["task"], d["delivery_attempts"], d["reason"]]
        for d in letters
    ]
    headers = ["Received", "Action", "Task", "Deliveries", "Reason"]
    return Markup("<h2>Dead letters</h2>{}").format(parts.table(headers, rows, ""))


def _retries(task: Row) -> Markup:
    if not task["max_retries"]:
        return Markup('<span class="muted">none</span>')
    return Markup("{}, first after {} s, backoff {}, at most {} s apart").format(
        task["max_retries"], task["retry_delay_s"], task["retry_backoff"], task["retry_max_delay_s"]
    )


def pipeline_page(detail: Row, base: str) -> str:
    names = [t["task"] for t in detail["tasks"]]
    rows = [
        [
            t["task"],
            t["handler"],
            t["trigger_rule"],
            _retries(t),
            Markup("{} s").format(t["timeout_s"]),
            t["pool"] or parts.NOTHING,
            "yes" if t["enabled"] else "no",
            parts.params(t["params"]),
        ]
        for t in detail["tasks"]
    ]
    headers = ["Task", "Handler", "Trigger rule", "Retries", "Timeout", "Pool", "Enabled", "Params"]
    body = Markup(
        '<div class="crumbs">{crumbs}</div><h1>{name}</h1><h2>Graph</h2>'
        '<div class="card scroll">{graph}</div><h2>Tasks</h2>{tasks}'
        "<h2>Recent batches</h2>{batches}"
    ).format(
        crumbs=link(url(base), "Batches"),
        name=detail["pipeline"],
        graph=svg.graph(names, _edges(detail), label=f"pipeline {detail['pipeline']}"),
        tasks=parts.table(headers, rows, "This pipeline has no tasks."),
        batches=_batch_table(detail["batches"], base, False),
    )
    return page(detail["pipeline"], body, base)
