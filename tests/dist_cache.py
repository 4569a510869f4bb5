"""The release artifacts, built once per run (loaded by tests/integration/conftest.py and
tests/e2e/conftest.py): `make test` runs the integration and e2e tiers at once, each on
pytest-xdist workers, and tests in both want the same wheel.

``shared_dist`` is `make dist` (.ci/dist.py, a fixed SOURCE_DATE_EPOCH) of a clean copy of the
sources, kept in the ignored ``build/test-dist/<key>/`` of the checkout. The key hashes every file
the build reads (name, executable bit, bytes; not times: the sdist rewrites them) with
.ci/dist.py and the Python version, so an edited source gives another key: a stale wheel is never
reused. Whichever process asks first builds, under an exclusive lock (fcntl), into a directory of
its own that it renames to the key when complete; the others wait on the lock, then read. The files
are read-only: every test shares them. A test that needs another build (another tree, another
epoch) makes its own with ``run_dist``."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.paths import ROOT

SOURCES = ("pyproject.toml", "README.md", "functions", "schema", "migrations")
EPOCH = "1767225600"  # 2026-01-01T00:00:00Z: what SOURCE_DATE_EPOCH would be, from git
DIST_SCRIPT = ROOT / ".ci" / "dist.py"  # what `make dist` runs
CACHE = ROOT / "build" / "test-dist"
STALE_AFTER_S = 24 * 3600  # other keys' directories older than this go when a new one is built


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path

    @property
    def files(self) -> list[Path]:
        """Both, in the order of their names (the wheel's sorts first)."""
        return sorted([self.wheel, self.sdist])


def copy_sources(target: Path, *, root: Path = ROOT, disturb: bool = False) -> Path:
    """What the build reads, without the checkout's caches and egg-info; ``disturb``: as another
    clone would have it, other file times and a group-writable umask."""
    target.mkdir(parents=True)
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in SOURCES:
        if (root / name).is_dir():
            shutil.copytree(root / name, target / name, ignore=junk)
        else:
            shutil.copy2(root / name, target / name)
    if disturb:
        for path in target.rglob("*"):
            os.utime(path, (1_000_000_000, 1_000_000_000))
            path.chmod(path.stat().st_mode | 0o020)
    return target


def run_dist(source: Path, outdir: Path, epoch: str = EPOCH) -> list[Path]:
    """`make dist` of ``source`` into ``outdir``; the files it wrote, sorted."""
    subprocess.run(
        [sys.executable, str(DIST_SCRIPT), "--source", str(source), "--outdir", str(outdir)],
        check=True,
        env={**os.environ, "SOURCE_DATE_EPOCH": epoch},
        capture_output=True,
        timeout=600,
    )
    return sorted(outdir.iterdir())


def tree_key(root: Path) -> str:
    """A hash of what a build of ``root`` reads: each file's path, executable bit and bytes,
    .ci/dist.py, the epoch and the Python version."""
    digest = hashlib.sha256()
    digest.update(f"{sys.version_info[:2]}\0{EPOCH}\0".encode())
    digest.update(DIST_SCRIPT.read_bytes())
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        mode = "x" if path.stat().st_mode & 0o111 else "-"
        digest.update(f"\0{path.relative_to(root).as_posix()}\0{mode}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:24]


def shared(key: str, build: Callable[[Path], None], cache: Path = CACHE) -> Path:
    """The directory that ``build`` fills, built once for ``key`` by whichever process asks first;
    it appears under its key only when complete, its files read-only."""
    done = cache / key
    if done.is_dir():
        return done
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if done.is_dir():
            return done
        partial = cache / f"{key}.partial"  # only the lock's holder writes here
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            build(partial)
            for path in partial.rglob("*"):
                if path.is_file():
                    path.chmod(0o444)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(done)
    _prune(cache, key)
    return done


def _prune(cache: Path, key: str) -> None:
    """Other keys' builds (older sources) of more than a day ago."""
    limit = time.time() - STALE_AFTER_S
    for path in cache.iterdir():
        if not path.name.startswith(key) and path.stat().st_mtime < limit:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def release_dist() -> Dist:
    """The wheel and sdist of the checkout's sources as they are now, built once."""
    with tempfile.TemporaryDirectory(prefix="dagrelay-dist-src-") as tmp:
        source = copy_sources(Path(tmp) / "source")

        def build(out: Path) -> None:
            run_dist(source, out)

        folder = shared(tree_key(source), build)
    (wheel,) = folder.glob("dagrelay-*.whl")
    (sdist,) = folder.glob("dagrelay-*.tar.gz")
    return Dist(wheel, sdist)


@pytest.fixture(scope="session")
def shared_dist() -> Dist:
    """`make dist` of the checkout's sources, shared by every test, worker and tier of a run."""
    return release_dist()
