"""The fence: every UPDATE that writes a ``status`` column says which status it expects.

ARCHITECTURE.md, invariant 1 ("Checked writes"): a transition is ``UPDATE … WHERE <key> AND
status = <expected>``, so a duplicate, late or racing writer finds the row changed and writes
nothing. This module finds the UPDATEs that break it, in any SQL text: the named statements of
``schema/sql/`` and the definitions of the SQL functions (``pg_get_functiondef``); the bodies of
dollar-quoted strings (plpgsql) are read as SQL too.

It is a small tokenizer, not a parser: it knows strings, quoted identifiers, comments,
dollar quotes and parentheses, which is all it takes to find an UPDATE's target, its SET list
and its WHERE clause. A status predicate is a reference to the target's ``status`` (bare, or
qualified by the target's name or alias) in the WHERE clause outside any subquery; a predicate
on another table's status (``b.status = 'RUNNING'``) does not fence the target's row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$)
  | (?P<string>[Ee]?'(?:[^']|'')*')
  | (?P<quoted>"(?:[^"]|"")*")
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<param>:[A-Za-z_]\w*|\$\d+)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<op>::|<>|!=|<=|>=|->>|->|\#>>|\|\||.)
    """,
    re.VERBOSE | re.DOTALL,
)
_STATUS = "status"
# Keywords that, after an UPDATE's table name, are not its alias.
_NOT_ALIAS = frozenset({"set"})
# After UPDATE: a row lock (FOR [NO KEY] UPDATE), not a statement.
_LOCK_BEFORE = frozenset({"for", "key"})
_SUBQUERY_START = frozenset({"select", "with", "values"})
_ANY = "*"  # among the target's names: any qualifier but EXCLUDED (the row an INSERT proposed)


@dataclass(frozen=True)
class Token:
    kind: str  # word (lower-cased), quoted (unquoted text), string, param, number, op
    text: str


@dataclass(frozen=True)
class StatusUpdate:
    """An UPDATE that writes a ``status`` column, and whether it is fenced: its WHERE clause
    has a predicate on the row's current status."""

    table: str
    statement: str  # the UPDATE's tokens, space-separated
    fenced: bool

    def __str__(self) -> str:
        fence = "fenced" if self.fenced else "without a status predicate"
        return f"UPDATE of {self.table}.status {fence}: {self.statement}"


def tokens(sql: str) -> list[Token]:
    """The tokens of ``sql``; a dollar-quoted string becomes the tokens of its body (a function
    body is SQL or plpgsql), comments and whitespace go."""
    out: list[Token] = []
    pos = 0
    while pos < len(sql):
        match = _TOKEN.match(sql, pos)
        if match is None:  # pragma: no cover - the last alternative matches any character
            raise ValueError(f"cannot read SQL at {pos}: {sql[pos : pos + 40]!r}")
        kind = match.lastgroup
        pos = match.end()
        if kind in {"dollar", "tag"}:
            closing = match.group("dollar")
            end = sql.find(closing, pos)
            if end < 0:
                raise ValueError(f"unterminated dollar quote {closing} at {match.start()}")
            out.extend(tokens(sql[pos:end]))
            pos = end + len(closing)
        elif kind == "word":
            out.append(Token("word", match.group().lower()))
        elif kind == "quoted":
            out.append(Token("word", match.group()[1:-1].replace('""', '"')))
        elif kind not in ("space", "comment"):
            out.append(Token(kind or "op", match.group()))
    return out


def unfenced_updates(sql: str) -> list[StatusUpdate]:
    """Every UPDATE in ``sql`` that sets a ``status`` column and whose WHERE clause has no
    predicate on the target's ``status``."""
    return [update for update in status_updates(sql) if not update.fenced]


def status_updates(sql: str) -> list[StatusUpdate]:
    """Every UPDATE in ``sql`` that sets a ``status`` column."""
    toks = tokens(sql)
    found = []
    for i, tok in enumerate(toks):
        if not _is(tok, "update"):
            continue
        before = toks[i - 1] if i else None
        if before is not None and before.kind == "word" and before.text in _LOCK_BEFORE:
            continue
        statement = _statement(toks, i)
        if before is not None and _is(before, "do"):
            # ON CONFLICT DO UPDATE: the INSERT's conflicting row, by any name but EXCLUDED's
            table, names, rest = "(on conflict)", {None, _ANY}, statement[1:]
        else:
            table, names, rest = _target(statement[1:])
        clauses = _clauses(rest)
        if _STATUS in _set_columns(clauses.get("set", [])):
            fenced = _has_status_predicate(clauses.get("where", []), names)
            found.append(StatusUpdate(table, " ".join(t.text for t in statement), fenced))
    return found


def _is(tok: Token, word: str) -> bool:
    return tok.kind == "word" and tok.text == word


def _statement(toks: list[Token], start: int) -> list[Token]:
    """From ``start`` to the end of its statement: a ``;`` at its own depth, or the ``)`` that
    closes the parenthesis it sits in (a CTE)."""
    depth = 0
    for j in range(start, len(toks)):
        text = toks[j].text if toks[j].kind == "op" else None
        if text == "(":
            depth += 1
        elif text == ")":
            if depth == 0:
                return toks[start:j]
            depth -= 1
        elif text == ";" and depth == 0:
            return toks[start:j]
    return toks[start:]


def _target(toks: list[Token]) -> tuple[str, set[str | None], list[Token]]:
    """The table after UPDATE, the names a column of it may be qualified with (None: bare),
    and the tokens after them."""
    i = 1 if toks and _is(toks[0], "only") else 0
    parts = [toks[i].text]
    i += 1
    while i + 1 < len(toks) and toks[i].text == "." and toks[i].kind == "op":
        parts.append(toks[i + 1].text)
        i += 2
    table = parts[-1]
    names: set[str | None] = {None, table}
    if i < len(toks) and _is(toks[i], "as"):
        i += 1
    if i < len(toks) and toks[i].kind == "word" and toks[i].text not in _NOT_ALIAS:
        names.add(toks[i].text)
        i += 1
    return table, names, toks[i:]


def _clauses(toks: list[Token]) -> dict[str, list[Token]]:
    """The statement's top-level clauses (set, from, where, returning), each its tokens."""
    clauses: dict[str, list[Token]] = {}
    current: list[Token] | None = None
    depth = 0
    previous: Token | None = None
    for tok in toks:
        starts = (
            depth == 0
            and tok.kind == "word"
            and tok.text in _CLAUSES
            and tok.text not in clauses
            and not (previous is not None and _is(previous, "distinct"))  # IS DISTINCT FROM
        )
        previous = tok
        if tok.kind == "op" and tok.text in "()":
            depth += 1 if tok.text == "(" else -1
        elif starts:
            current = clauses[tok.text] = []
            continue
        if current is not None:
            current.append(tok)
    return clauses


_CLAUSES = ("set", "from", "where", "returning")


def _set_columns(toks: list[Token]) -> set[str]:
    """The columns a SET list assigns: ``col = …`` and ``(a, b) = …`` at its top level."""
    columns: set[str] = set()
    depth = 0
    expecting = True  # at the start of an assignment
    for tok in toks:
        if tok.kind == "op" and tok.text == "(":
            depth += 1
        elif tok.kind == "op" and tok.text == ")":
            depth -= 1
        elif tok.kind == "op" and tok.text == "," and depth == 0:
            expecting = True
            continue
        elif tok.kind == "op" and tok.text == "=" and depth == 0:
            expecting = False
        elif expecting and tok.kind == "word" and depth <= 1:
            columns.add(tok.text)
    return columns


def _has_status_predicate(where: list[Token], names: set[str | None]) -> bool:
    """Whether ``where`` refers to the target's ``status`` outside a subquery."""
    subquery_depths: list[int] = []
    depth = 0
    for j, tok in enumerate(where):
        if tok.kind == "op" and tok.text == "(":
            depth += 1
            nxt = where[j + 1] if j + 1 < len(where) else None
            if nxt is not None and nxt.kind == "word" and nxt.text in _SUBQUERY_START:
                subquery_depths.append(depth)
        elif tok.kind == "op" and tok.text == ")":
            if subquery_depths and subquery_depths[-1] == depth:
                subquery_depths.pop()
            depth -= 1
        elif not subquery_depths and _is(tok, _STATUS):
            dotted = j >= 2 and where[j - 1].kind == "op" and where[j - 1].text == "."
            qualifier = where[j - 2].text if dotted else None
            if qualifier in names or (_ANY in names and qualifier != "excluded"):
                return True
    return False
