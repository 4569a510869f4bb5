"""`make dist` is reproducible: two builds of the same sources, one from a copy whose files have
other times and modes, give the same wheel and sdist bytes (.ci/dist.py). The first is the run's
shared build of a clean copy (tests/dist_cache.py), the second this test's own."""

from __future__ import annotations

import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from tests.dist_cache import EPOCH, Dist, copy_sources, run_dist

pytestmark = [pytest.mark.integration, pytest.mark.long_pole(20)]


def test_two_builds_give_the_same_bytes(shared_dist: Dist, tmp_path: Path) -> None:
    first = shared_dist.files
    second = run_dist(copy_sources(tmp_path / "b", disturb=True), tmp_path / "dist-b")
    version = metadata.version("dagrelay")
    assert [p.name for p in first] == [
        f"dagrelay-{version}-py3-none-any.whl",
        f"dagrelay-{version}.tar.gz",
    ]
    assert [p.name for p in second] == [p.name for p in first]
    for one, other in zip(first, second, strict=True):
        assert one.read_bytes() == other.read_bytes(), one.name
    wheel = zipfile.ZipFile(first[0])
    assert "dagrelay/_schema/sql/tasks.sql" in wheel.namelist()
    assert {i.date_time[:3] for i in wheel.infolist()} == {(2026, 1, 1)}
    with tarfile.open(first[1]) as sdist:
        assert {m.mtime for m in sdist.getmembers()} == {int(EPOCH)}
