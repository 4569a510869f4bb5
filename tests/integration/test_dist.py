"""`make dist` is reproducible: two builds of the same sources, one from a copy whose files have
other times and modes, give the same wheel and sdist bytes (.ci/dist.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.long_pole(20)]

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "functions", "schema", "migrations")
EPOCH = "1767225600"  # 2026-01-01T00:00:00Z: what SOURCE_DATE_EPOCH would be, from git


def copy_sources(target: Path, *, disturb: bool) -> Path:
    target.mkdir()
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, target / name, ignore=junk)
        else:
            shutil.copy2(REPO / name, target / name)
    if disturb:  # another clone: other file times, a group-writable umask
        for path in target.rglob("*"):
            os.utime(path, (1_000_000_000, 1_000_000_000))
            path.chmod(path.stat().st_mode | 0o020)
    return target


def dist(source: Path, outdir: Path) -> list[Path]:
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}
    subprocess.run(
        [
            sys.executable,
            str(REPO / ".ci" / "dist.py"),
            "--source",
            str(source),
            "--outdir",
            str(outdir),
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=600,
    )
    return sorted(outdir.iterdir())


def test_two_builds_give_the_same_bytes(tmp_path: Path) -> None:
    first = dist(copy_sources(tmp_path / "a", disturb=False), tmp_path / "dist-a")
    second = dist(copy_sources(tmp_path / "b", disturb=True), tmp_path / "dist-b")
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
