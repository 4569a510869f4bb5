"""`python -m local_emulator up` keeps the stack running and `down` stops everything it
started, by PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from dagrelay.local.processes import wait_for
from tests.dbtools import create_database, drop_database
from tests.paths import ROOT

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_then_down_stops_everything_it_started(template_db: str, tmp_path: Path) -> None:
    name = f"dagrelay_updown_{os.getpid()}"
    url = create_database(name, template=template_db)
    env = {**os.environ, "DATABASE_URL": url, "DAGRELAY_LOCAL_STACK_DIR": str(tmp_path)}
    env.pop("PUBSUB_EMULATOR_HOST", None)
    state = tmp_path / "state.json"
    output = tmp_path / "up.out"
    with output.open("w") as sink:
        up = subprocess.Popen(
            [sys.executable, "-m", "local_emulator", "up"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: state.exists() or up.poll() is not None, 90, "the stack to come up")
        assert up.poll() is None, output.read_text()
        info = json.loads(state.read_text())
        pids = list(info["pids"].values())
        assert len(pids) == 6  # Pub/Sub, GCS and BigQuery stand-ins, router, status, operate
        assert all(alive(p) for p in pids)
        # What `up` prints is what the README's commands use: `curl "$STATUS_URL/?batch_id=..."`.
        wait_for(lambda: "Stop with Ctrl-C" in output.read_text(), 30, "up to print the variables")
        exported = dict(
            line.strip().removeprefix("export ").split("=", 1)
            for line in output.read_text().splitlines()
            if line.strip().startswith("export ") and " " not in line.strip()[7:]
        )
        assert exported["STATUS_URL"] == info["status_url"]
        assert exported["DATABASE_URL"] == url
        response = requests.get(f"{exported['STATUS_URL']}/?batch_id=nope", timeout=10)
        assert response.status_code == 404

        down = subprocess.run(
            [sys.executable, "-m", "local_emulator", "down"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert down.returncode == 0, down.stderr
        assert up.wait(timeout=30) == 0
        wait_for(lambda: not any(alive(p) for p in pids), 30, "the stack's processes to exit")
        assert not state.exists()
        assert "stack stopped" in output.read_text()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=30)
        # up's children run in sessions of their own: stop whatever it recorded, by PID.
        if state.exists():
            for pid in json.loads(state.read_text())["pids"].values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        drop_database(name)
