"""The HTML pages of batches and pipelines: self-contained (our own stylesheet and script, and
the vendored ELK, all from this origin; nothing fetched elsewhere), every value from the database
escaped (see ``parts``). Each page renders a ``model`` payload; task, Gantt and message pages are
in ``pages``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from markupsafe import Markup

from dagrelay.dashboard import graph, parts
from dagrelay.dashboard.assets import asset_url
from dagrelay.dashboard.parts import PENDING, Ops, link, pill, url, when
from dagrelay.states import RERUN_FROM, BatchStatus, TaskStatus
from dagrelay.store import reads

Row = dict[str, Any]
# Every task status, and PENDING (tests/unit/test_vocabulary.py: all of them, nothing else).
LEGEND = (
    TaskStatus.SUCCESS,
    TaskStatus.ERROR,
    TaskStatus.UPSTREAM_FAILED,
    TaskStatus.PROCESSING,
    TaskStatus.QUEUED,
    TaskStatus.RETRY,
    TaskStatus.NEW,
    TaskStatus.SKIPPED,
    TaskStatus.CANCELLED,
    PENDING,
)
POLL_MS = 3000


def page(
    title: str,
    body: Markup,
    base: str,
    ops: Ops | None = None,
    *,
    script: bool = False,
    attrs: Mapping[str, str] | None = None,
) -> str:
    """A whole page; ``script`` loads ELK and the dashboard's script; ``attrs`` go on <body>."""
    scripts = (
        Markup('<script src="{}" defer></script><script src="{}" defer></script>').format(
            asset_url(base, "elk.bundled.js"), asset_url(base, "dashboard.js")
        )
        if script or attrs
        else Markup("")
    )
    body_attrs = Markup("").join(
        Markup(' {}="{}"').format(k, v) for k, v in sorted((attrs or {}).items())
    )
    nav = Markup("").join(
        link(url(base, *path), label)
        for path, label in (
            (("",), "Batches"),
            (("rejected",), "Rejected"),
            (("dead-letters",), "Dead letters"),
            (("asset-graph",), "Assets"),
        )
    )
    role = Markup('<span class="role">operator</span>') if ops else Markup("")
    return str(
        Markup(
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<title>{title} · dagrelay</title><link rel="stylesheet" href="{style}">{scripts}'
            '</head><body{attrs}><header class="top"><a class="brand" href="{home}">dagrelay</a>'
            "<nav>{nav}</nav>{role}</header><main>{body}</main></body></html>"
        ).format(
            title=title,
            style=asset_url(base, "style.css"),
            scripts=scripts,
            attrs=body_attrs,
            home=url(base),
            nav=nav,
            role=role,
            body=body,
        )
    )


def error_page(status: int, message: str, base: str, ops: Ops | None = None) -> str:
    body = Markup('<h1>{}</h1><p class="problem">{}</p><p>{}</p>').format(
        status, message, link(url(base), "All batches")
    )
    return page(f"{status}", body, base, ops)


def legend() -> Markup:
    return Markup('<div class="legend">{}</div>').format(Markup("").join(pill(s) for s in LEGEND))


def graph_card(payload: Row, label: str) -> Markup:
    """The graph's holder (drawn by the script), its data and its grouping control."""
    modes = Markup("").join(
        Markup('<option value="{}"{}>{}</option>').format(
            value, Markup(" selected") if value == payload["mode"] else Markup(""), text
        )
        for value, text in (
            ("none", "every task"),
            ("prefix", "groups by name"),
            ("level", "groups by level"),
        )
    )
    return Markup(
        '<div class="graph-tools"><label for="graph-mode">Show</label>'
        '<select id="graph-mode">{modes}</select><span class="muted">{n} tasks · click a group '
        "to open it</span></div>"
        '<div class="card scroll graph-card"><div id="graph" class="graph" data-label="{label}" '
        'data-layout="pending"><p class="muted">Laying out the graph…</p></div></div>{data}'
    ).format(
        modes=modes,
        n=len(payload["names"]),
        label=label,
        data=parts.json_block("graph-data", payload),
    )


def batches_page(
    data: Row, pipelines: list[str], selected: str | None, base: str, ops: Ops | None = None
) -> str:
    options = _options(pipelines, selected)
    form = Markup(
        '<form class="filter" method="get" action="{}"><label for="pipeline">Pipeline</label>'
        '<select id="pipeline" name="pipeline"><option value="">all</option>{}</select>'
        '<button type="submit">Filter</button></form>'
    ).format(url(base), options)
    body = Markup("<h1>Batches</h1>{}{}{}").format(
        form,
        trigger_form(base, ops, pipelines, selected),
        _batch_table(data["batches"], base, True),
    )
    return page("Batches", body, base, ops)


def _options(pipelines: list[str], selected: str | None) -> Markup:
    return Markup("").join(
        Markup('<option value="{}"{}>{}</option>').format(
            p, Markup(" selected") if p == selected else Markup(""), p
        )
        for p in pipelines
    )


def trigger_form(base: str, ops: Ops | None, pipelines: list[str], selected: str | None) -> Markup:
    if ops is None or not pipelines:
        return Markup("")
    options = _options(pipelines, selected)
    fields = Markup(
        '<label>Pipeline <select name="pipeline">{}</select></label>'
        '<label>Batch id <input name="batch_id" required placeholder="2024-03"></label>'
        '<label>Params <input name="params" placeholder=\'{{"month": "2024-03"}}\'></label>'
        '<label>Start task <input name="start_task" placeholder="(all)"></label>'
    ).format(options)
    return Markup(
        '<details class="card trigger"><summary>Trigger a batch</summary>{}</details>'
    ).format(parts.action_form(base, ops, "trigger", {}, "Trigger", extra=fields))


def _batch_table(batches: list[Row], base: str, with_pipeline: bool) -> Markup:
    headers = ["Pipeline"] if with_pipeline else []
    headers += ["Batch", "Status", "Started", "Duration", "Triggered by", "Tasks"]
    rows = []
    for b in batches:
        cells: list[Any] = [link(url(base, "pipelines", b["pipeline"]), b["pipeline"])]
        cells = cells if with_pipeline else []
        cells += [
            link(url(base, "batches", b["pipeline"], b["batch_id"]), b["batch_id"]),
            pill(b["status"]),
            when(b["created_at"]),
            parts.seconds(b["duration_s"]),
            b["triggered_by"],
            parts.counts(b["task_counts"]),
        ]
        rows.append(cells)
    return parts.table(headers, rows, "No batches yet.")


def crumbs(base: str, pipeline: str, *more: Markup) -> Markup:
    trail = [link(url(base), "Batches"), link(url(base, "pipelines", pipeline), pipeline), *more]
    return Markup('<div class="crumbs">{}</div>').format(Markup(" / ").join(trail))


def batch_tabs(base: str, pipeline: str, batch_id: str, current: str) -> Markup:
    tabs = (("graph", "Graph", ()), ("gantt", "Gantt", ("gantt",)))
    return Markup('<nav class="tabs">{}</nav>').format(
        Markup("").join(
            Markup('<a href="{}"{}>{}</a>').format(
                url(base, "batches", pipeline, batch_id, *path),
                Markup(' class="current"') if key == current else Markup(""),
                label,
            )
            for key, label, path in tabs
        )
    )


def live_attrs(base: str, batch: Row, task: Row | None = None) -> dict[str, str]:
    """<body> attributes that make the script poll the batch's JSON while it runs."""
    if batch["status"] not in (BatchStatus.RUNNING, BatchStatus.CANCELLING):
        return {}
    attrs = {
        "data-poll": url(base, "api", "batches", batch["pipeline"], batch["batch_id"]),
        "data-poll-ms": str(POLL_MS),
        "data-batch-status": batch["status"],
    }
    if task is not None:
        attrs |= {"data-task": task["task"], "data-task-status": task["status"] or PENDING}
    return attrs


def batch_actions(base: str, ops: Ops | None, batch: Row, tasks: list[Row]) -> Markup:
    if ops is None:
        return Markup("")
    key = {"pipeline": batch["pipeline"], "batch_id": batch["batch_id"]}
    forms = []
    if batch["status"] == BatchStatus.RUNNING:
        forms.append(parts.action_form(base, ops, "cancel", key, "Cancel batch", danger=True))
    if batch["status"] == BatchStatus.CANCELLED:
        forms.append(parts.action_form(base, ops, "resume", key, "Resume (run what never ran)"))
    if batch["status"] in RERUN_FROM and any(t["status"] == TaskStatus.ERROR for t in tasks):
        forms.append(parts.action_form(base, ops, "rerun-failed", key, "Rerun failed tasks"))
    if not forms:
        return Markup("")
    return Markup('<div class="actions">{}</div>').format(Markup("").join(forms))


def batch_page(detail: Row, base: str, ops: Ops | None = None) -> str:
    batch = detail["batch"]
    p, b = batch["pipeline"], batch["batch_id"]
    statuses = {t["task"]: t["status"] for t in detail["tasks"]}
    causes = [c["task"] for c in detail["root_causes"]]
    task_url = url(base, "batches", p, b, "tasks") + "/{task}"
    groups = {g["task"]: g for g in detail.get("map_groups") or []}
    payload = graph.payload(statuses, _edges(detail), statuses, causes, task_url, groups=groups)
    body = Markup(
        "{crumbs}<h1>{title} {status}</h1>{tabs}{actions}{facts}{deadlines}<h2>Graph</h2>"
        "{legend}{graph}"
        "{causes}<h2>Tasks</h2>{tasks}{dead}"
    ).format(
        crumbs=crumbs(base, p),
        title=b,
        status=pill(batch["status"]),
        tabs=batch_tabs(base, p, b, "graph"),
        actions=batch_actions(base, ops, batch, detail["tasks"]),
        facts=_batch_facts(batch),
        deadlines=_deadlines(detail.get("deadlines") or []),
        legend=legend(),
        graph=graph_card(payload, f"batch {b}"),
        causes=_root_causes(detail["root_causes"]),
        tasks=_task_table(detail["tasks"], base, p, b, detail.get("map_groups")),
        dead=_dead_letters(detail["dead_letters"]),
    )
    return page(f"{p} / {b}", body, base, ops, script=True, attrs=live_attrs(base, batch))


def _edges(detail: Row) -> list[tuple[str, str]]:
    return [(e["parent"], e["child"]) for e in detail["edges"]]


def version_text(version: int | None) -> Any:
    return f"v{version}" if version is not None else Markup('<span class="muted">live tasks</span>')


def _batch_facts(batch: Row) -> Markup:
    return parts.facts(
        [
            ("Pipeline", batch["pipeline"]),
            ("Version", version_text(batch["version"])),
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


def _deadlines(deadlines: list[Row]) -> Markup:
    """The batch's deadlines, each due or missed (ARCHITECTURE.md, "Deadlines")."""
    if not deadlines:
        return Markup("")
    now = datetime.now(UTC)
    items = Markup("").join(
        Markup('<li data-deadline="{task}" class="{state}">{text}</li>').format(
            task=d["task"] or "",
            state="missed" if d["missed_at"] is not None else "",
            text=reads.deadline_text(cast(reads.Deadline, d), now),
        )
        for d in deadlines
    )
    return Markup('<h2>Deadlines</h2><ul class="deadlines">{}</ul>').format(items)


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


def items_badge(group: Row) -> Markup:
    """A mapped task's counts: done of total, failed, running."""
    done = group["succeeded"] + group["failed"]
    return Markup('<span class="badge">{} / {} done, {} failed, {} running</span>').format(
        done, group["total"], group["failed"], group["running"]
    )


def _task_table(
    tasks: list[Row], base: str, pipeline: str, batch_id: str, groups: list[Row] | None = None
) -> Markup:
    badges = {g["task"]: items_badge(g) for g in groups or []}
    rows = [
        [
            Markup('<a id="task-{}" href="{}">{}</a>').format(
                t["task"], url(base, "batches", pipeline, batch_id, "tasks", t["task"]), t["task"]
            ),
            pill(t["status"]) + badges.get(t["task"], Markup("")),
            t["attempt"],
            when(t["started_at"]),
            parts.seconds(t["duration_s"]),
            t["root_cause_task"] or parts.NOTHING,
            reads.queue_place(t) or reads.waiting(t) or parts.error(t["error"]),
        ]
        for t in tasks
    ]
    headers = ["Task", "Status", "Attempts", "Started", "Duration", "Root cause", "Error"]
    return parts.table(headers, rows, "This pipeline has no tasks.")


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


def pipeline_page(detail: Row, grid: Row, base: str, ops: Ops | None = None) -> str:
    name = detail["pipeline"]
    names = [t["task"] for t in detail["tasks"]]
    payload = graph.payload(names, _edges(detail))
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
        '<div class="crumbs">{crumbs}</div><h1>{name}</h1>{trigger}<h2>Graph</h2>{graph}'
        "<h2>Grid</h2>{grid}<h2>Tasks</h2>{tasks}<h2>Recent batches</h2>{batches}"
    ).format(
        crumbs=link(url(base), "Batches"),
        name=name,
        trigger=trigger_form(base, ops, [name], name),
        graph=graph_card(payload, f"pipeline {name}") if names else parts.NOTHING,
        grid=grid_table(grid, payload, base),
        tasks=parts.table(headers, rows, "This pipeline has no tasks."),
        batches=_batch_table(detail["batches"], base, False),
    )
    return page(name, body, base, ops, script=bool(names))


def grid_table(grid: Row, payload: Row, base: str) -> Markup:
    """Airflow's grid: a row per task (by level, then name), a column per batch (oldest
    left), each cell its state, linking to the task's page in that batch."""
    batches = grid["batches"]
    if not batches or not payload["names"]:
        return Markup('<p class="muted">No batches yet.</p>')
    order = sorted(
        range(len(payload["names"])), key=lambda i: (payload["level"][i], payload["names"][i])
    )
    head = Markup("").join(
        Markup('<th class="col"><a href="{}" title="{}">{}</a>{}</th>').format(
            url(base, "batches", grid["pipeline"], b["batch_id"]),
            b["batch_id"],
            b["batch_id"],
            Markup('<span class="cell status-{}"></span>').format(b["status"]),
        )
        for b in batches
    )
    body = Markup("").join(
        Markup("<tr><th>{}</th>{}</tr>").format(
            payload["names"][i], _grid_cells(grid["pipeline"], payload["names"][i], batches, base)
        )
        for i in order
    )
    return Markup(
        '<div class="card scroll"><table class="grid"><thead><tr><th>Task</th>{}</tr></thead>'
        "<tbody>{}</tbody></table></div>"
    ).format(head, body)


def _grid_cells(pipeline: str, task: str, batches: list[Row], base: str) -> Markup:
    cells = []
    for b in batches:
        status = b["statuses"].get(task) or PENDING
        cells.append(
            Markup('<td><a class="cell status-{s}" href="{u}" title="{b}: {s}"></a></td>').format(
                s=status,
                u=url(base, "batches", pipeline, b["batch_id"], "tasks", task),
                b=b["batch_id"],
            )
        )
    return Markup("").join(cells)
