"""The deployable archive imports and runs on its own: unpacked into an empty folder, its main.py
serves a Pub/Sub push under functions-framework using only what the archive holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from dagrelay.ops.packaging import build_archive, runtime_requirements

pytestmark = pytest.mark.integration

PROBE = """
import base64, json, sys
import functions_framework
import dagrelay
assert dagrelay.__file__.startswith(sys.argv[1]), dagrelay.__file__
app = functions_framework.create_app("router", sys.argv[1] + "/main.py", "cloudevent")
body = {"message": {"data": base64.b64encode(b"not json").decode(), "messageId": "archive-1",
                    "attributes": {"action": "start_batch"}},
        "subscription": "projects/p/subscriptions/s"}
response = app.test_client().post("/projects/p/topics/dagrelay-events", json=body)
print(json.dumps({"status": response.status_code, "package": dagrelay.__file__}))
"""


def test_archive_holds_entry_point_package_schema_and_pinned_requirements(tmp_path: Path) -> None:
    archive = build_archive(tmp_path / "function.zip")
    names = zipfile.ZipFile(archive).namelist()
    assert "main.py" in names
    assert "dagrelay/engine/core.py" in names
    assert "dagrelay/_schema/sql/tasks.sql" in names
    assert "dagrelay/_schema/messages/run_task.schema.json" in names
    assert "dagrelay/_schema/openapi.json" in names
    assert "dagrelay/dashboard/static/style.css" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]
    # Only what the functions read at run time: no migrations, demo data or second main.py.
    assert not [n for n in names if n.startswith(("dagrelay/_migrations", "dagrelay/_function"))]
    assert not [n for n in names if n.endswith((".csv", ".yaml")) and "sources.yaml" not in n]
    requirements = zipfile.ZipFile(archive).read("requirements.txt").decode().split()
    assert requirements == runtime_requirements()
    assert all("==" in r for r in requirements)


def test_archive_is_reproducible(tmp_path: Path) -> None:
    first = build_archive(tmp_path / "a.zip").read_bytes()
    second = build_archive(tmp_path / "b.zip").read_bytes()
    assert first == second


def test_unpacked_archive_serves_a_push(
    tmp_path: Path, db: Engine, db_url: str, pubsub_emulator: str
) -> None:
    unpacked = tmp_path / "source"
    zipfile.ZipFile(build_archive(tmp_path / "function.zip")).extractall(unpacked)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DAGRELAY_")},
        "PYTHONPATH": str(unpacked),
        "DATABASE_URL": db_url,
        "PUBSUB_EMULATOR_HOST": pubsub_emulator,
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(unpacked)],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == 200
    assert outcome["package"].startswith(str(unpacked))
    with db.connect() as conn:
        reason = conn.execute(
            text("SELECT reason FROM rejected_messages WHERE message_id = 'archive-1'")
        ).scalar_one()
    assert "not JSON" in reason
