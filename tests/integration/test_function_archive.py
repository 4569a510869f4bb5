"""The deployable archive imports and runs on its own: unpacked into an empty folder, its main.py
serves a Pub/Sub push under functions-framework using only what the archive holds. With a team's
project it holds only what the rule of ops/contents.py lets in, stays within Cloud Functions' size
limits (streamed, never read whole), and `build-function --list` says what goes in and why not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from dagrelay import cli
from dagrelay.errors import ConfigError
from dagrelay.ops.packaging import Limits, build_archive, runtime_requirements

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


@pytest.fixture(scope="module")
def checkout_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The archive of the checkout alone, built once for the tests that only read it."""
    return build_archive(tmp_path_factory.mktemp("archive") / "function.zip")


def test_archive_holds_entry_point_package_schema_and_pinned_requirements(
    checkout_archive: Path,
) -> None:
    archive = checkout_archive
    names = zipfile.ZipFile(archive).namelist()
    assert "main.py" in names
    assert "dagrelay/engine/core.py" in names
    assert "dagrelay/_schema/sql/tasks.sql" in names
    assert "dagrelay/_schema/messages/run_task.schema.json" in names
    assert "dagrelay/_schema/openapi.json" in names
    assert "dagrelay/dashboard/static/style.css" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]
    # The migrations, for the deploy function; no demo data or second main.py.
    assert "dagrelay/_migrations/env.py" in names
    assert "dagrelay/_migrations/versions/0001_core_schema.py" in names
    assert not [n for n in names if n.startswith("dagrelay/_function")]
    assert not [n for n in names if n.endswith((".csv", ".yaml")) and "sources.yaml" not in n]
    # Nor the local stack (dagrelay.local, the `local` extra): its emulators are not deployed.
    assert not [n for n in names if n.startswith("dagrelay/local/")]
    requirements = zipfile.ZipFile(archive).read("requirements.txt").decode().split()
    assert requirements == runtime_requirements()
    assert all("==" in r for r in requirements)


def test_archive_is_reproducible(checkout_archive: Path, tmp_path: Path) -> None:
    first = checkout_archive.read_bytes()
    second = build_archive(tmp_path / "b.zip").read_bytes()
    assert first == second


def test_unpacked_archive_serves_a_push(
    checkout_archive: Path, tmp_path: Path, db: Engine, db_url: str, pubsub_emulator: str
) -> None:
    unpacked = tmp_path / "source"
    zipfile.ZipFile(checkout_archive).extractall(unpacked)
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


SERVICE_ACCOUNT = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----"}'


def team_project(root: Path) -> Path:
    """A project as a team leaves it lying around: steps, a pipeline, and things to keep out."""
    files = {
        "handlers/__init__.py": "",
        "handlers/acme/export.py": "X = 1\n",
        "pipelines/etl.yaml": "pipeline: etl\n",
        "sql/merge.sql": "SELECT 1\n",
        "handlers/.secrets.yaml": "password: hunter2\n",
        "handlers/.hidden/step.py": "",
        "handlers/key.json": SERVICE_ACCOUNT,
        "pipelines/sa-key.json": SERVICE_ACCOUNT,
        "pipelines/.env": "DB_PASSWORD=x\n",
        "sql/server.pem": "-----BEGIN CERTIFICATE-----\n",
    }
    for name, body in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)
    return root


def test_a_link_out_of_the_project_stops_the_build_naming_it(tmp_path: Path) -> None:
    project = team_project(tmp_path / "acme")
    (project / "handlers" / "passwd.py").symlink_to("/etc/passwd")
    out = tmp_path / "function.zip"
    with pytest.raises(ConfigError, match=r"handlers/passwd\.py: a link to /etc/passwd, outside"):
        build_archive(out, project)
    assert not out.exists()


def test_hidden_and_credential_files_stay_out_and_modules_import(tmp_path: Path) -> None:
    project = team_project(tmp_path / "acme")
    archive = zipfile.ZipFile(build_archive(tmp_path / "function.zip", project))
    team = sorted(n for n in archive.namelist() if not n.startswith(("dagrelay/", "main.py")))
    assert team == [
        "dagrelay.yaml",
        "handlers/__init__.py",
        "handlers/acme/export.py",
        "pipelines/etl.yaml",
        "requirements.txt",
        "sql/merge.sql",
    ]
    settings = archive.read("dagrelay.yaml").decode()
    assert "- handlers\n- handlers.acme.export\n" in settings
    assert "hidden" not in settings


def test_a_module_name_python_cannot_import_stops_the_build(tmp_path: Path) -> None:
    project = team_project(tmp_path / "acme")
    (project / "handlers" / "my-step.py").write_text("")
    with pytest.raises(ConfigError, match=r"handlers/my-step.py: 'my-step' cannot be part of"):
        build_archive(tmp_path / "function.zip", project)


def test_the_size_limits_stop_the_build_and_leave_no_file(tmp_path: Path) -> None:
    project = team_project(tmp_path / "acme")
    (project / "sql" / "big.sql").write_bytes(os.urandom(3_000_000))  # does not compress
    out = tmp_path / "function.zip"
    size = build_archive(tmp_path / "ok.zip", project).stat().st_size
    with pytest.raises(ConfigError, match=r"files add up to .* over the 3\.0 MB .* sql/big\.sql"):
        build_archive(out, project, Limits(compressed=10**9, uncompressed=3_000_000))
    with pytest.raises(ConfigError, match=r"passes 3\.0 MB compressed .* at sql/big\.sql"):
        build_archive(out, project, Limits(compressed=3_000_000, uncompressed=10**9))
    assert not out.exists()
    assert not list(tmp_path.glob("*.partial"))
    assert size > 3_000_000


def test_files_are_streamed_not_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = team_project(tmp_path / "acme")
    (project / "sql" / "big.sql").write_text("SELECT 1;\n" * 200_000)

    def refuse(self: Path) -> bytes:
        raise AssertionError(f"read whole: {self}")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    archive = zipfile.ZipFile(build_archive(tmp_path / "function.zip", project))
    info = archive.getinfo("sql/big.sql")
    assert info.file_size == 2_000_000
    assert info.compress_size < info.file_size // 10  # compressed, as before it was not


def test_list_says_what_goes_in_and_why_not(tmp_path: Path) -> None:
    project = team_project(tmp_path / "acme")
    out = tmp_path / "function.zip"
    result = CliRunner().invoke(
        cli.app, ["build-function", "--project", str(project), "--out", str(out), "--list"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[:3] for line in lines if line.split()[2:3] == ["project"]] == [
        ["in", "handlers/__init__.py", "project"],
        ["in", "handlers/acme/export.py", "project"],
        ["in", "pipelines/etl.yaml", "project"],
        ["in", "sql/merge.sql", "project"],
    ]
    out_lines = {
        line.split()[1]: line.split(None, 2)[2] for line in lines if line.startswith("out")
    }
    assert out_lines == {
        "handlers/.hidden/": "a hidden directory",
        "handlers/.secrets.yaml": "a hidden file",
        "handlers/key.json": "a Google service-account key (type service_account with a "
        "private_key)",
        "pipelines/.env": "looks like a credential (.env*); keep secrets in Secret Manager",
        "pipelines/sa-key.json": "a Google service-account key (type service_account with a "
        "private_key)",
        "sql/server.pem": "looks like a credential (*.pem); keep secrets in Secret Manager",
    }
    assert "6 left out, 0 refused" in lines[-1]
    assert not out.exists()


def test_list_names_what_stops_the_build(tmp_path: Path) -> None:
    project = team_project(tmp_path / "acme")
    (project / "pipelines" / "passwd.yaml").symlink_to("/etc/passwd")
    (project / "requirements.txt").write_text("acme-lib @ file:///home/me/acme.whl\n")
    result = CliRunner().invoke(cli.app, ["build-function", "--project", str(project), "--list"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert errors[0].startswith("error: pipelines/passwd.yaml: a link to /etc/passwd, outside")
    assert errors[1].startswith("error: requirements.txt:1: acme-lib points at file:///")
