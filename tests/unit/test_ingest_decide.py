"""Pure parts of ingestion on the engine: the load / duplicate / refuse decision, the batch id
of an object, and which names are refused before anything is read."""

from __future__ import annotations

import dataclasses
import re

import pytest

from dagrelay.ingest.filelog import Earlier
from dagrelay.ingest.handlers import decide
from dagrelay.ingest.pipeline import batch_id
from dagrelay.ingest.sources import load_sources, unsafe_name
from dagrelay.states import FileStatus

SALES = load_sources()["sales"]
LOADED = Earlier(7, "gs://b/inbox/sales/s_2024-03.csv#1", "md5-a")


@pytest.mark.parametrize(
    ("on_replace", "earlier", "md5", "expected"),
    [
        ("refuse", [], "md5-a", FileStatus.VALIDATED),  # nothing loaded yet
        ("refuse", [LOADED], "md5-a", FileStatus.DUPLICATE),  # same content
        ("append", [LOADED], "md5-a", FileStatus.DUPLICATE),  # same content, whatever the rule
        ("refuse", [LOADED], "md5-b", FileStatus.REJECTED),  # other content, same name
        ("append", [LOADED], "md5-b", FileStatus.VALIDATED),
    ],
)
def test_decide(on_replace: str, earlier: list[Earlier], md5: str, expected: FileStatus) -> None:
    source = dataclasses.replace(SALES, on_replace=on_replace)  # type: ignore[arg-type]
    verdict = decide(source, md5, earlier)
    assert verdict.to == expected
    if expected != FileStatus.VALIDATED:
        assert verdict.earlier == LOADED
        assert LOADED.uri in (verdict.reason or "")


BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:=+-]{0,127}")


@pytest.mark.parametrize(
    "name",
    ["inbox/sales/sales_2024-03.csv", "inbox/sales/..x y ü.csv", "inbox/sales/" + "x" * 400, "_"],
)
def test_batch_id_follows_the_rules_and_tells_objects_apart(name: str) -> None:
    ids = {batch_id("b", name, 1), batch_id("b", name, 2), batch_id("c", name, 1)}
    assert len(ids) == 3
    assert all(BATCH_ID.fullmatch(i) for i in ids)
    assert batch_id("b", name, 1) == batch_id("b", name, 1)


@pytest.mark.parametrize(
    ("name", "unsafe"),
    [
        ("inbox/sales/s.csv", False),
        ("inbox/sales/a/b.csv", False),
        ("inbox/sales/../s.csv", True),
        ("inbox/sales/./s.csv", True),
        ("inbox/sales//s.csv", True),
        ("inbox/sales/s\x00.csv", True),
        ("inbox/sales/s\x7f.csv", True),
    ],
)
def test_unsafe_names(name: str, unsafe: bool) -> None:
    assert (unsafe_name(name) is not None) == unsafe
