"""The shared release artifacts' cache under the load `make test` puts on it: four processes (two
tiers of two pytest-xdist workers) ask for the same key at once; one builds, all four get the
same finished directory (tests/dist_cache.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import ROOT

pytestmark = pytest.mark.integration

ASKERS = 4

# argv: cache, arrivals dir, builds log. Says it has arrived, then asks; the build (whoever
# takes the lock) waits until every asker has arrived, so all four ask while it runs.
ASK = """
import json, os, sys, time
from pathlib import Path
from tests.dist_cache import shared

cache, arrivals, log = map(Path, sys.argv[1:4])
(arrivals / str(os.getpid())).touch()

def build(out):
    deadline = time.monotonic() + 60
    while len(list(arrivals.iterdir())) < int(sys.argv[4]):
        assert time.monotonic() < deadline, "the other askers never came"
        time.sleep(0.01)
    with log.open("a") as f:
        f.write(f"{os.getpid()}\\n")
    (out / "artifact").write_text("built by " + str(os.getpid()))

done = shared("key", build, cache)
print(json.dumps({"dir": str(done), "artifact": (done / "artifact").read_text()}))
"""


def test_four_processes_asking_at_once_share_one_build(tmp_path: Path) -> None:
    cache, arrivals, log = tmp_path / "cache", tmp_path / "arrivals", tmp_path / "builds.log"
    arrivals.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", ASK, str(cache), str(arrivals), str(log), str(ASKERS)]
    askers = [
        subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(ASKERS)
    ]
    answers = []
    for asker in askers:
        out, err = asker.communicate(timeout=120)
        assert asker.returncode == 0, err.decode()
        answers.append(json.loads(out))
    builders = log.read_text().split()
    assert len(builders) == 1
    assert {a["dir"] for a in answers} == {str(cache / "key")}
    assert {a["artifact"] for a in answers} == {f"built by {builders[0]}"}
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == ["key"]
