"""Validation of a pipeline's graph before it is written (the database checks again)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dagrelay.errors import handler_hint


@dataclass(frozen=True)
class TaskSpec:
    name: str
    handler: str
    parents: tuple[str, ...] = ()
    params: Mapping[str, object] = field(default_factory=dict)


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle in {child: parents} as [a, b, ..., a] (following parent -> child), or None."""
    children: dict[str, list[str]] = {}
    for child, parents in edges.items():
        for parent in parents:
            children.setdefault(parent, []).append(child)
    white, grey, black = 0, 1, 2
    colour: dict[str, int] = {}
    nodes = sorted(set(edges) | set(children))
    for root in nodes:
        if colour.get(root, white) != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        colour[root] = grey
        while stack:
            node, index = stack[-1]
            kids = sorted(children.get(node, []))
            if index == len(kids):
                stack.pop()
                path.pop()
                colour[node] = black
                continue
            stack[-1] = (node, index + 1)
            kid = kids[index]
            if colour.get(kid, white) == grey:
                return [*path[path.index(kid) :], kid]
            if colour.get(kid, white) == white:
                colour[kid] = grey
                stack.append((kid, 0))
                path.append(kid)
    return None


def validate_dag(tasks: list[TaskSpec], known_handlers: Iterable[str]) -> list[str]:
    """Every problem with a pipeline's tasks, each naming the tasks involved; [] if valid."""
    problems: list[str] = []
    handlers = set(known_handlers)
    names = [t.name for t in tasks]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            problems.append(f"task {name!r} is defined more than once")
        seen.add(name)
    for task in tasks:
        if task.handler not in handlers:
            problems.append(
                f"task {task.name!r}: unknown handler {task.handler!r} "
                f"({handler_hint(task.handler, handlers)})"
            )
        for parent in task.parents:
            if parent == task.name:
                problems.append(f"task {task.name!r} cannot depend on itself")
            elif parent not in seen:
                problems.append(f"task {task.name!r}: unknown parent {parent!r}")
        if len(set(task.parents)) != len(task.parents):
            problems.append(f"task {task.name!r}: a parent is listed twice")
    edges: dict[str, list[str]] = {}
    for t in tasks:  # a duplicated task contributes all its definitions' parents
        edges.setdefault(t.name, []).extend(p for p in t.parents if p != t.name and p in seen)
    cycle = find_cycle(edges)
    if cycle:
        problems.append("cycle: " + " -> ".join(cycle))
    return problems
