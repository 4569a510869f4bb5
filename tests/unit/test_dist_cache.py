"""The shared release artifacts' cache (tests/dist_cache.py): its key follows every byte, name and
executable bit the build reads and nothing else, so a stale wheel is never reused after a source
change; a directory appears under its key only once its build has finished."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dist_cache import SOURCES, copy_sources, shared, tree_key


def tree(root: Path) -> Path:
    for name, body in {
        "pyproject.toml": "[project]\n",
        "README.md": "# x\n",
        "functions/dagrelay/__init__.py": "",
        "functions/main.py": "",
        "schema/sql/tasks.sql": "SELECT 1;\n",
        "migrations/env.py": "",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)
    return root


def test_the_key_follows_contents_names_and_modes_only(tmp_path: Path) -> None:
    root = tree(tmp_path / "src")
    key = tree_key(root)
    assert tree_key(root) == key
    (root / "functions" / "main.py").touch()  # a newer mtime: the build never sees it
    assert tree_key(root) == key
    (root / "schema" / "sql" / "tasks.sql").write_text("SELECT 2;\n")
    edited = tree_key(root)
    assert edited != key
    (root / "schema" / "sql" / "tasks.sql").rename(root / "schema" / "sql" / "task.sql")
    renamed = tree_key(root)
    assert renamed not in {key, edited}
    (root / "migrations" / "env.py").chmod(0o755)  # the sdist keeps the executable bit
    assert tree_key(root) not in {key, edited, renamed}


def test_the_copy_leaves_the_checkouts_junk_behind(tmp_path: Path) -> None:
    root = tree(tmp_path / "checkout")
    (root / "functions" / "dagrelay" / "__pycache__").mkdir()
    (root / "functions" / "dagrelay" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (root / "functions" / "dagrelay.egg-info").mkdir()
    (root / "build").mkdir()
    copy = copy_sources(tmp_path / "copy", root=root)
    assert sorted(p.name for p in copy.iterdir()) == sorted(SOURCES)
    assert not [p for p in copy.rglob("*") if "__pycache__" in p.parts or "egg-info" in p.name]
    assert tree_key(copy) == tree_key(copy_sources(tmp_path / "again", root=root))


def test_a_build_runs_once_per_key_and_a_failed_one_leaves_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    builds: list[Path] = []

    def build(out: Path) -> None:
        builds.append(out)
        (out / "artifact").write_text("bytes")

    first = shared("k1", build, cache)
    assert shared("k1", build, cache) == first
    assert len(builds) == 1
    assert (first / "artifact").read_text() == "bytes"
    assert not (first / "artifact").stat().st_mode & 0o222  # read-only: shared by every test

    def broken(out: Path) -> None:
        (out / "half").write_text("")
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        shared("k2", broken, cache)
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == ["k1"]
    second = shared("k2", build, cache)
    assert (second / "artifact").read_text() == "bytes"
    assert len(builds) == 2
