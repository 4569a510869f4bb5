"""The deploy step as `terraform apply` runs it: a team's archive (a `dagrelay init` project plus a
pipeline file added afterwards, no list edited), unpacked into an empty folder, its main.py's
`deploy` function under functions-framework, on an empty database of the real PostgreSQL. It
migrates to head and applies every pipeline the archive holds; the same hash again does nothing;
a pipeline that fails names its file and writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from dagrelay.ops import deploy
from dagrelay.ops.packaging import build_archive
from dagrelay.scaffold import write_project
from dagrelay.store import migrate

pytestmark = pytest.mark.integration

# POSTs each body of argv[3] to the archive's deploy function; prints one JSON line per answer.
PROBE = """
import json, sys
import functions_framework
app = functions_framework.create_app("deploy", sys.argv[1] + "/main.py", "http")
client = app.test_client()
for body in json.loads(sys.argv[2]):
    response = client.post("/", json=body)
    print(json.dumps({"status": response.status_code, "body": response.get_json()}))
"""

ADDED = """\
pipeline: added_later
description: A pipeline file added to the project after `dagrelay init`.
tasks:
  - name: first
    handler: python.noop
  - name: second
    handler: python.noop
    parents: [first]
"""

BROKEN = """\
pipeline: broken
tasks:
  - name: a
    handler: python.noop
    parents: [b]
  - name: b
    handler: python.noop
    parents: [a]
"""


def _project(root: Path, extra: dict[str, str]) -> Path:
    project = write_project(root / "acme").root
    for name, body in extra.items():
        (project / name).write_text(body, encoding="utf-8")
    return project


def _deploy(
    tmp_path: Path, project: Path, db_url: str, bodies: list[dict[str, str]], deployed: str
) -> list[dict[str, Any]]:
    unpacked = tmp_path / "source"
    zipfile.ZipFile(build_archive(tmp_path / "function.zip", project)).extractall(unpacked)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DAGRELAY_")},
        "PYTHONPATH": str(unpacked),
        "DATABASE_URL": db_url,
        "DAGRELAY_ARCHIVE_HASH": deployed,
        "DAGRELAY_DB_POOL_SIZE": "2",
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(unpacked), json.dumps(bodies)],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.strip().splitlines()]


def _tasks(db_url: str) -> dict[str, list[str]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT pipeline, name FROM tasks ORDER BY 1, 2")).all()
    finally:
        engine.dispose()
    found: dict[str, list[str]] = {}
    for pipeline, name in rows:
        found.setdefault(pipeline, []).append(name)
    return found


def test_deploy_migrates_applies_every_pipeline_of_the_archive_and_repeats_as_a_no_op(
    tmp_path: Path, empty_db_url: str
) -> None:
    project = _project(tmp_path, {"pipelines/added_later.yaml": ADDED})
    first, again, other = _deploy(
        tmp_path,
        project,
        empty_db_url,
        [{"archive": "h1"}, {"archive": "h1"}, {"archive": "h0"}],
        deployed="h1",
    )

    assert first["status"] == 200, first
    assert first["body"]["status"] == "applied"
    assert first["body"]["revision"] == migrate.head()
    assert sorted(first["body"]["pipelines"]) == [
        "pipelines/added_later.yaml",
        "pipelines/daily_report.yaml",
        "pipelines/orders.py",
    ]
    tasks = _tasks(empty_db_url)
    assert tasks["added_later"] == ["first", "second"]
    assert {"acme_daily", "acme_orders"} <= set(tasks)

    assert again == {
        "status": 200,
        "body": {
            "archive": "h1",
            "status": "unchanged",
            "revision": migrate.head(),
            "pipelines": {},
        },
    }
    # A request for another archive than the deployed one reached an old revision: refused.
    assert other["status"] == 409
    assert "runs archive h1" in other["body"]["error"]


def test_a_failing_pipeline_names_its_file_and_nothing_is_applied(
    tmp_path: Path, empty_db_url: str
) -> None:
    project = _project(tmp_path, {"pipelines/added_later.yaml": ADDED, "pipelines/zz.yaml": BROKEN})
    (failed, retried) = _deploy(
        tmp_path, project, empty_db_url, [{"archive": "h2"}, {"archive": "h2"}], deployed="h2"
    )

    assert failed["status"] == 500
    assert failed["body"]["file"] == "pipelines/zz.yaml"
    assert failed["body"]["error"].startswith("pipelines/zz.yaml: ")
    assert "cycle" in failed["body"]["error"].lower()
    # Migrated, but no pipeline written and no hash recorded: the next run tries again.
    assert _tasks(empty_db_url) == {}
    assert retried["status"] == 500
    assert retried["body"]["file"] == "pipelines/zz.yaml"


def test_each_applied_archive_is_recorded_and_a_rollback_is_applied_again(
    tmp_path: Path, empty_db_url: str
) -> None:
    """The newest row of ``deploys`` is what a deploy compares: the same archive again is a
    no-op, an older one (a rollback) is applied again, with its files, and recorded."""
    root = tmp_path / "archive"
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "added_later.yaml").write_text(ADDED, encoding="utf-8")
    engine = create_engine(empty_db_url)
    try:
        statuses = [deploy.run(engine, root, h).status for h in ("h1", "h2", "h2", "h1")]
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT archive, revision, applied FROM deploys ORDER BY deploy_id")
            ).all()
    finally:
        engine.dispose()
    assert statuses == ["applied", "applied", "unchanged", "applied"]
    assert [(r.archive, r.revision) for r in rows] == [
        ("h1", migrate.head()),
        ("h2", migrate.head()),
        ("h1", migrate.head()),
    ]
    assert list(rows[0].applied) == ["pipelines/added_later.yaml"]
