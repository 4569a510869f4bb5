"""Pipeline versions as plain data: what changed between two versions, and whether a batch may
move to a newer version for a rerun (``rerun --latest``). Pure functions; the store reads the
versions (``dagrelay.store.versions``) and the engine acts.

The rule for moving a batch to the pipeline's current version (``rerun --latest``):

1. the batch ran the whole pipeline (it was not started from a task);
2. every task the two versions both have keeps its task id (it was not deleted and inserted
   again under the same name);
3. every task that differs between the versions lies in the rerun: an added or changed task
   (any setting, or its set of parents) in the rerun's scope in the new version, a removed task
   that has a row in the batch in the rerun's scope in the old version. The scope is the named
   tasks and, with ``downstream``, everything below them.

Then nothing the batch keeps was decided by a definition it no longer has, and everything the
new version changes runs again under it. Otherwise the move is refused, naming the tasks.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FIELDS = (
    "handler",
    "params",
    "trigger_rule",
    "max_retries",
    "retry_delay_s",
    "retry_backoff",
    "retry_max_delay_s",
    "timeout_s",
    "pool",
    "enabled",
    "pool_slots",
    "priority",
    "max_active",
    "teardown",
    "updates",
)


@dataclass(frozen=True)
class VersionTask:
    name: str
    task_id: int
    settings: Mapping[str, Any]
    parents: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Definition:
    """One version of a pipeline: its tasks by name."""

    pipeline: str
    version: int
    tasks: Mapping[str, VersionTask]

    def edges(self) -> set[tuple[str, str]]:
        """(parent, child) names."""
        return {(p, t.name) for t in self.tasks.values() for p in t.parents}

    def below(self, names: Iterable[str]) -> set[str]:
        """``names`` and every task downstream of them."""
        children: dict[str, set[str]] = {}
        for parent, child in self.edges():
            children.setdefault(parent, set()).add(child)
        found: set[str] = set()
        stack = [n for n in names if n in self.tasks]
        while stack:
            name = stack.pop()
            if name not in found:
                found.add(name)
                stack.extend(children.get(name, ()))
        return found


def definition(
    pipeline: str,
    version: int,
    tasks: Iterable[Mapping[str, Any]],
    edges: Iterable[tuple[str, str]],
) -> Definition:
    """A Definition from rows: tasks with ``name``, ``task_id`` and FIELDS; (parent, child)."""
    parents: dict[str, set[str]] = {}
    for parent, child in edges:
        parents.setdefault(child, set()).add(parent)
    return Definition(
        pipeline,
        version,
        {
            row["name"]: VersionTask(
                row["name"],
                row["task_id"],
                {f: row[f] for f in FIELDS},
                frozenset(parents.get(row["name"], ())),
            )
            for row in tasks
        },
    )


@dataclass(frozen=True)
class VersionDiff:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: Mapping[str, Mapping[str, tuple[Any, Any]]] = field(default_factory=dict)
    edges_added: tuple[tuple[str, str], ...] = ()
    edges_removed: tuple[tuple[str, str], ...] = ()

    def differing(self) -> set[str]:
        """Tasks added, removed, or changed in a setting or in their parents."""
        ends = {child for _, child in (*self.edges_added, *self.edges_removed)}
        return set(self.added) | set(self.removed) | set(self.changed) | ends

    def __bool__(self) -> bool:
        parts = (self.added, self.removed, self.changed, self.edges_added, self.edges_removed)
        return any(parts)


def diff(old: Definition, new: Definition) -> VersionDiff:
    """What changed from ``old`` to ``new``: tasks by name, settings field by field, edges."""
    both = sorted(old.tasks.keys() & new.tasks.keys())
    changed = {}
    for name in both:
        a, b = old.tasks[name].settings, new.tasks[name].settings
        fields = {f: (a[f], b[f]) for f in FIELDS if a[f] != b[f]}
        if fields:
            changed[name] = fields
    return VersionDiff(
        added=tuple(sorted(new.tasks.keys() - old.tasks.keys())),
        removed=tuple(sorted(old.tasks.keys() - new.tasks.keys())),
        changed=changed,
        edges_added=tuple(sorted(new.edges() - old.edges())),
        edges_removed=tuple(sorted(old.edges() - new.edges())),
    )


def move_refusals(
    old: Definition,
    new: Definition,
    *,
    tasks: Collection[str],
    downstream: bool,
    with_rows: Collection[str],
    started_from_task: bool,
) -> list[str]:
    """Why the batch (on ``old``, with rows for the tasks ``with_rows``) cannot move to ``new``
    to rerun ``tasks``; [] when it can. See the module's docstring for the rule."""
    where = f"version {new.version}"
    if started_from_task:
        return [f"the batch was started from a task: it cannot move to {where}"]
    missing = sorted(set(tasks) - new.tasks.keys())
    if missing:
        return [f"{where} has no task {name!r}" for name in missing]
    reasons = [
        f"task {name!r} was replaced (deleted and inserted again) in {where}"
        for name in sorted(old.tasks.keys() & new.tasks.keys())
        if old.tasks[name].task_id != new.tasks[name].task_id
    ]
    scope_new = new.below(tasks) if downstream else set(tasks)
    scope_old = old.below(tasks) if downstream else set(tasks)
    changes = diff(old, new)
    for name in sorted(changes.differing()):
        if name in new.tasks and name not in scope_new:
            what = "is new" if name not in old.tasks else "changed"
            reasons.append(f"task {name!r} {what} in {where} but is not rerun")
        elif name not in new.tasks and name in with_rows and name not in scope_old:
            reasons.append(f"task {name!r} ran in this batch, is not in {where}, and is not rerun")
    return reasons
