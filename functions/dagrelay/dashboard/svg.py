"""The DAG as inline SVG: one ``<g class="node status-X">`` per task (a rounded rect, the name,
the status), one path per edge. Every value from the database is escaped by ``Markup.format``;
colours come from the page's CSS classes, so the SVG holds no style of its own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from markupsafe import Markup

from dagrelay.dashboard.layout import Box, Layout, layout

NAME_CHARS = 24
UNCOLOURED = "none"  # the pipeline page: structure only, no batch
PENDING = "PENDING"  # a batch's task that has no task_log row (yet)


def graph(
    names: Iterable[str],
    edges: Iterable[tuple[str, str]],
    statuses: Mapping[str, str | None] | None = None,
    root_causes: Iterable[str] = (),
    label: str = "task graph",
) -> Markup:
    """``statuses`` None draws the bare structure; otherwise each task's status (None: PENDING)."""
    drawn = layout(names, edges)
    causes = set(root_causes)
    nodes = Markup("").join(
        _node(box, _status(box.name, statuses), box.name in causes) for box in drawn.boxes.values()
    )
    lines = Markup("").join(
        Markup('<path class="edge" d="{}" data-parent="{}" data-child="{}"/>').format(
            e.path, e.parent, e.child
        )
        for e in drawn.edges
    )
    return _frame(drawn, label, lines + nodes)


def _status(name: str, statuses: Mapping[str, str | None] | None) -> str:
    if statuses is None:
        return UNCOLOURED
    return statuses.get(name) or PENDING


def _frame(drawn: Layout, label: str, body: Markup) -> Markup:
    return Markup(
        '<svg class="dag" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{label}" '
        'width="{w}" height="{h}" viewBox="0 0 {w} {h}">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker>'
        "</defs>{body}</svg>"
    ).format(label=label, w=int(drawn.width), h=int(drawn.height), body=body)


def _node(box: Box, status: str, root_cause: bool) -> Markup:
    classes = f"node status-{status}" + (" root-cause" if root_cause else "")
    caption = status if status != UNCOLOURED else ""
    if root_cause:
        caption += " · root cause"
    halo = (
        Markup('<rect class="halo" x="{}" y="{}" width="{}" height="{}" rx="12"/>').format(
            box.x - 5, box.y - 5, box.w + 10, box.h + 10
        )
        if root_cause
        else Markup("")
    )
    return Markup(
        '<g id="node-{name}" class="{classes}" data-task="{name}" data-status="{status}">'
        "<title>{name}{sep}{status_title}</title>{halo}"
        '<rect class="box" x="{x}" y="{y}" width="{w}" height="{h}" rx="8"/>'
        '<text class="name" x="{tx}" y="{ty1}">{short}</text>'
        '<text class="state" x="{tx}" y="{ty2}">{caption}</text></g>'
    ).format(
        name=box.name,
        classes=classes,
        status=status,
        sep=": " if status != UNCOLOURED else "",
        status_title=caption,
        halo=halo,
        x=box.x,
        y=box.y,
        w=box.w,
        h=box.h,
        tx=box.x + 12,
        ty1=box.y + (21 if caption else box.h / 2 + 5),
        ty2=box.y + 38,
        short=_shorten(box.name),
        caption=caption,
    )


def _shorten(name: str) -> str:
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"
