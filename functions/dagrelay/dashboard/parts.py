"""Small HTML pieces shared by the pages. Everything returns ``Markup`` built with
``Markup.format``/``join``, which escape every value that is not already Markup."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from markupsafe import Markup

from dagrelay.dashboard.csrf import FIELD

NOTHING = Markup('<span class="muted">—</span>')
PENDING = "PENDING"  # the dashboard's word for a task without a row yet, not a status


@dataclass(frozen=True)
class Ops:
    """The operator's side of a page: present only on the operator function, with the CSRF
    token its forms carry."""

    token: str


def url(base: str, *segments: str, **query: str | None) -> str:
    path = "/".join(quote(s, safe="") for s in segments)
    args = {k: v for k, v in query.items() if v is not None}
    return f"{base}/{path}" + (f"?{urlencode(args)}" if args else "")


def link(href: str, text: str) -> Markup:
    return Markup('<a href="{}">{}</a>').format(href, text)


def pill(status: str | None) -> Markup:
    shown = status or PENDING
    return Markup('<span class="pill status-{}">{}</span>').format(shown, shown)


def when(moment: datetime | None) -> Markup:
    if moment is None:
        return NOTHING
    return Markup('<time datetime="{}">{}</time>').format(
        moment.isoformat(), moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    )


def seconds(value: float | None) -> Markup:
    if value is None:
        return NOTHING
    if value < 60:
        return Markup("{} s").format(f"{value:.1f}" if value < 10 else f"{value:.0f}")
    minutes, secs = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    return Markup("{}").format(f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s")


def error(text: str | None) -> Markup:
    return Markup('<pre class="error">{}</pre>').format(text) if text else NOTHING


def params(value: Mapping[str, Any] | None) -> Markup:
    if not value:
        return NOTHING
    return Markup('<code class="params">{}</code>').format(json.dumps(value, sort_keys=True))


def counts(task_counts: Mapping[str, int]) -> Markup:
    chips = (
        Markup('<span class="pill status-{}">{} {}</span>').format(status, n, status)
        for status, n in sorted(task_counts.items())
    )
    return Markup('<span class="counts">{}</span>').format(Markup("").join(chips))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], empty: str) -> Markup:
    """A table; each cell is Markup (kept) or a plain value (escaped)."""
    body = Markup("").join(
        Markup("<tr>{}</tr>").format(Markup("").join(Markup("<td>{}</td>").format(c) for c in row))
        for row in rows
    )
    if not body:
        return Markup('<p class="muted">{}</p>').format(empty)
    head = Markup("").join(Markup("<th>{}</th>").format(h) for h in headers)
    return Markup(
        '<div class="scroll"><table><thead><tr>{}</tr></thead><tbody>{}</tbody></table></div>'
    ).format(head, body)


def facts(items: Iterable[tuple[str, Any]]) -> Markup:
    pairs = Markup("").join(Markup("<dt>{}</dt><dd>{}</dd>").format(k, v) for k, v in items)
    return Markup('<dl class="facts card">{}</dl>').format(pairs)


def json_block(element_id: str, value: Any) -> Markup:
    """Data for the page's script: JSON in a non-executed script element, with ``<``, ``>`` and
    ``&`` escaped so no value can close the element."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup('<script type="application/json" id="{}">{}</script>').format(
        element_id,
        Markup(text),  # noqa: S704 - JSON with <, > and & escaped above
    )


def action_form(
    base: str,
    ops: Ops | None,
    action: str,
    fields: Mapping[str, str],
    label: str,
    *,
    extra: Markup | None = None,
    danger: bool = False,
) -> Markup:
    """A POST form for one operator action (nothing on the read-only function)."""
    if ops is None:
        return Markup("")
    hidden = Markup("").join(
        Markup('<input type="hidden" name="{}" value="{}">').format(k, v) for k, v in fields.items()
    )
    return Markup(
        '<form class="action" method="post" action="{url}" data-action="{action}">'
        '<input type="hidden" name="{field}" value="{token}">{hidden}{extra}'
        '<button type="submit" class="{cls}">{label}</button></form>'
    ).format(
        url=url(base, "actions", action),
        action=action,
        field=FIELD,
        token=ops.token,
        hidden=hidden,
        extra=extra or Markup(""),
        cls="danger" if danger else "primary",
        label=label,
    )


def pre(value: Any, cls: str = "data") -> Markup:
    """A JSON value or a text, preformatted (escaped)."""
    if value is None or value == "":
        return NOTHING
    shown = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True)
    return Markup('<pre class="{}">{}</pre>').format(cls, shown)
