"""What the page's script needs to draw a task graph, decided on the server (pure: no I/O).

The layout itself is ELK's (the vendored ``static/elk.bundled.js``, driven by
``static/dashboard.js``): layered, left to right, edges routed orthogonally around the boxes.
This module only says which tasks there are, their state, their level (longest path from a root)
and the group each belongs to, so a large pipeline can be drawn with its groups collapsed:

- ``prefix``: tasks whose names differ only in a trailing number (``part_001`` … ``part_250``)
  or in the part after the last separator (``load_sales``, ``load_costs``) form one group;
- ``level``: all tasks at the same depth form one group.

A pipeline of more than ``COLLAPSE_OVER`` tasks opens with its prefix groups collapsed, or, if
that still leaves more than ``MAX_DRAWN`` boxes, with its levels collapsed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

COLLAPSE_OVER = 40
MAX_DRAWN = 120
UNCOLOURED = "none"  # the pipeline page: structure only, no batch
PENDING = "PENDING"  # a batch's task that has no task_log row (yet)
_TRAILING_NUMBER = re.compile(r"[0-9]+$")
_LAST_PART = re.compile(r"(?<=[._-])[^._-]+$")


def prefix_group(name: str) -> str | None:
    """The prefix group a task name falls in (``part_017`` -> ``part_*``, ``load_sales`` ->
    ``load_*``), or None for a name with neither a trailing number nor a separator."""
    for pattern in (_TRAILING_NUMBER, _LAST_PART):
        cut = pattern.sub("", name)
        if cut != name and cut:
            return cut + "*"
    return None


def levels(names: Iterable[str], edges: Iterable[tuple[str, str]]) -> dict[str, int]:
    """{task: level} by longest path from a root; ``edges`` are (parent, child) pairs.
    Raises ValueError on an edge to an unknown task or a cycle."""
    nodes = set(names)
    parents: dict[str, set[str]] = {n: set() for n in nodes}
    children: dict[str, list[str]] = {n: [] for n in nodes}
    for parent, child in edges:
        if parent not in nodes or child not in nodes:
            raise ValueError(f"edge {parent} -> {child} names an unknown task")
        if parent not in parents[child]:
            parents[child].add(parent)
            children[parent].append(child)
    waiting = {n: len(ps) for n, ps in parents.items()}
    ready = sorted(n for n, count in waiting.items() if count == 0)
    level = dict.fromkeys(ready, 0)
    while ready:
        node = ready.pop()
        for child in children[node]:
            level[child] = max(level.get(child, 0), level[node] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if len(level) < len(nodes) or any(waiting.values()):
        stuck = sorted(n for n, count in waiting.items() if count)
        raise ValueError(f"cycle among {', '.join(stuck)}")
    return level


def initial_mode(names: Sequence[str], prefixes: Sequence[str | None]) -> str:
    """How the graph opens: ``none`` (every task drawn), ``prefix`` or ``level``."""
    if len(names) <= COLLAPSE_OVER:
        return "none"
    sizes = Counter(p for p in prefixes if p is not None)
    drawn = sum(1 for p in prefixes if p is None or sizes[p] == 1) + sum(
        1 for size in sizes.values() if size > 1
    )
    return "prefix" if drawn <= MAX_DRAWN else "level"


def payload(
    names: Iterable[str],
    edges: Iterable[tuple[str, str]],
    statuses: Mapping[str, str | None] | None = None,
    root_causes: Iterable[str] = (),
    task_url: str | None = None,
    *,
    groups: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, Any]:
    """The graph for ``dashboard.js``, in columns indexed by task (names sorted): ``status``
    (``none`` without a batch; PENDING for a task with no row), ``level``, ``prefix`` group,
    ``edges`` as [parent index, child index], ``causes`` (indexes of root causes), ``mode``
    and ``items``: for a mapped task of the batch its group's counts, drawn as one node
    (``total``; ``done``: the items that ended, failed ones included; ``failed``; ``running``)
    from ``groups`` (by task: total, succeeded, failed, running); None for any other task.
    ``task_url`` is the URL of a task's page with ``{task}`` in place of its (quoted) name."""
    edge_list = sorted(set(edges))
    order = sorted(set(names))
    level = levels(order, edge_list)
    index = {name: i for i, name in enumerate(order)}
    prefixes = [prefix_group(n) for n in order]
    causes = set(root_causes)
    return {
        "names": order,
        "status": [UNCOLOURED if statuses is None else statuses.get(n) or PENDING for n in order],
        "level": [level[n] for n in order],
        "prefix": prefixes,
        "edges": [[index[p], index[c]] for p, c in edge_list],
        "causes": [index[n] for n in order if n in causes],
        "mode": initial_mode(order, prefixes),
        "task_url": task_url,
        "items": [_item_counts((groups or {}).get(n)) for n in order],
    }


def _item_counts(group: Mapping[str, int] | None) -> dict[str, int] | None:
    if group is None:
        return None
    return {
        "total": group["total"],
        "done": group["succeeded"] + group["failed"],
        "failed": group["failed"],
        "running": group["running"],
    }
