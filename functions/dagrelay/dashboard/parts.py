"""Small HTML pieces shared by the pages. Everything returns ``Markup`` built with
``Markup.format``/``join``, which escape every value that is not already Markup."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from markupsafe import Markup

_STYLE = Path(__file__).with_name("style.css")
NOTHING = Markup('<span class="muted">—</span>')


@cache
def style() -> Markup:
    return Markup(_STYLE.read_text(encoding="utf-8"))  # noqa: S704 - our own file, not data


def url(base: str, *segments: str, **query: str | None) -> str:
    path = "/".join(quote(s, safe="") for s in segments)
    args = {k: v for k, v in query.items() if v is not None}
    return f"{base}/{path}" + (f"?{urlencode(args)}" if args else "")


def link(href: str, text: str) -> Markup:
    return Markup('<a href="{}">{}</a>').format(href, text)


def pill(status: str | None) -> Markup:
    shown = status or "PENDING"
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
