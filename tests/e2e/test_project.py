"""A team's project, as a team gets it: ``dagrelay init`` from a wheel installed in a fresh
virtualenv; the scaffold's own tests pass; its YAML and Python pipelines apply to the same rows
as their exports; ``build-function --project`` makes an archive that, unpacked into another new
virtualenv (the archive's ``requirements.txt`` installed, by uv: test_wheel.install_into) and
served by functions-framework behind the emulator's push subscription, runs the team's
Python-handler pipeline end to end.
Its Terraform root passes ``terraform fmt`` and checkov offline, like terraform/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import pubsub_v1
from sqlalchemy import create_engine, text

from dagrelay.local import infra, processes
from dagrelay.store.reads import batch_outputs
from tests.dbtools import ADMIN_URL
from tests.integration.test_wheel import install_into, installed, wheel  # noqa: F401 - fixtures

pytestmark = [pytest.mark.e2e, pytest.mark.long_pole(60)]

REPO = Path(__file__).resolve().parents[2]
PROJECT = "dagrelay-test"
NAME = "acme"
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> str:
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{argv}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the checkout's settings or paths."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("DAGRELAY_", "PYTHON"))}
    keep.pop("DATABASE_URL", None)
    return {**keep, "DAGRELAY_TEST_ADMIN_URL": ADMIN_URL, **extra}


@pytest.fixture(scope="module")
def project(
    installed: Path,  # noqa: F811
    wheel: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """``dagrelay init`` in a fresh venv holding the wheel, then the README's set-up:
    ``pip install -r requirements-dev.txt`` (dagrelay[testing], which brings pytest; by uv)."""
    root = tmp_path_factory.mktemp("team") / NAME
    module = str(REPO / "terraform")
    run([str(installed / "dagrelay"), "init", str(root), "--terraform-module", module],
        cwd=root.parent, env=clean_env())  # fmt: skip
    install_into(
        installed / "python", "--find-links", str(wheel.parent), "-r", "requirements-dev.txt",
        cwd=root,
    )  # fmt: skip
    return root


def test_the_scaffold_tree_and_its_own_tests(project: Path, installed: Path) -> None:  # noqa: F811
    files = sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file())
    assert files == [
        ".gitignore",
        "README.md",
        "dagrelay.yaml",
        "handlers/__init__.py",
        "handlers/orders.py",
        "pipelines/__init__.py",
        "pipelines/daily_report.yaml",
        "pipelines/orders.py",
        "pytest.ini",
        "requirements-dev.txt",
        "requirements.txt",
        "sql/orders_summary.sql",
        "terraform/main.tf",
        "terraform/outputs.tf",
        "terraform/terraform.tfvars.example",
        "terraform/variables.tf",
        "terraform/versions.tf",
        "tests/test_pipelines.py",
    ]
    started = time.monotonic()
    out = run([str(installed / "pytest"), "-q", "-p", "no:cacheprovider"], project, clean_env())
    assert "3 passed" in out, out
    print(f"scaffold tests in the fresh venv: {time.monotonic() - started:.1f} s")


def _rows(url: str) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT name, pipeline, handler, params::text, trigger_rule::text, "
                    "max_retries, retry_delay_s, retry_backoff, retry_max_delay_s, timeout_s, "
                    "pool, enabled FROM tasks ORDER BY name"
                )
            )
        ]
        found += [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT p.name, c.name FROM task_dependencies d "
                    "JOIN tasks p ON p.task_id = d.parent_task_id "
                    "JOIN tasks c ON c.task_id = d.child_task_id ORDER BY 1, 2"
                )
            )
        ]
        found += [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT pipeline, cron, timezone, batch_id_template, catchup, catchup_limit, "
                    "max_active_batches, overlap, paused FROM schedules ORDER BY pipeline"
                )
            )
        ]
    engine.dispose()
    return found


@pytest.fixture
def second_db_url(template_db: str) -> Iterator[str]:
    from tests.dbtools import create_database, drop_database  # noqa: PLC0415

    name = f"dagrelay_export_{os.getpid()}_{time.monotonic_ns() % 10**8}"
    yield create_database(name, template=template_db)
    drop_database(name)


def test_apply_yaml_and_python_writes_the_rows_of_their_exports(
    project: Path,
    installed: Path,  # noqa: F811
    db_url: str,
    second_db_url: str,
    tmp_path: Path,
) -> None:
    dagrelay = str(installed / "dagrelay")
    first = clean_env(DATABASE_URL=db_url)
    for file in ("pipelines/daily_report.yaml", "pipelines/orders.py"):
        out = run([dagrelay, "pipeline", "apply", file], project, first)
        assert " 3 created, 0 updated" in out, out
    for pipeline in (f"{NAME}_daily", f"{NAME}_orders"):
        exported = tmp_path / f"{pipeline}.yaml"
        run([dagrelay, "pipeline", "export", pipeline, "-o", str(exported)], project, first)
        out = run([dagrelay, "pipeline", "apply", str(exported)], project, first)
        assert "0 created, 0 updated, 3 unchanged" in out, out
        run(
            [dagrelay, "pipeline", "apply", str(exported)],
            project,
            clean_env(DATABASE_URL=second_db_url),
        )
    assert _rows(db_url) == _rows(second_db_url)
    assert len(_rows(db_url)) == 6 + 4 + 2


def test_the_archive_runs_the_teams_pipeline_behind_push(
    project: Path,
    installed: Path,  # noqa: F811
    db_url: str,
    pubsub_emulator: str,
    unique: str,
    tmp_path: Path,
) -> None:
    dagrelay = str(installed / "dagrelay")
    env = clean_env(DATABASE_URL=db_url)
    run([dagrelay, "build-function", "--project", ".", "--out", "dist/a.zip"], project, env)
    run([dagrelay, "build-function", "--project", ".", "--out", "dist/b.zip"], project, env)
    archive = project / "dist" / "a.zip"
    assert archive.read_bytes() == (project / "dist" / "b.zip").read_bytes()
    names = zipfile.ZipFile(archive).namelist()
    team = [n for n in names if not n.startswith("dagrelay/")]
    print("archive (besides dagrelay/):", team)
    assert team == [
        "main.py",
        "dagrelay.yaml",
        "handlers/__init__.py",
        "handlers/orders.py",
        "pipelines/__init__.py",
        "pipelines/daily_report.yaml",
        "pipelines/orders.py",
        "sql/orders_summary.sql",
        "requirements.txt",
    ]
    run([dagrelay, "pipeline", "apply", "pipelines/orders.py"], project, env)

    source = tmp_path / "source"
    zipfile.ZipFile(archive).extractall(source)
    function_venv = tmp_path / "fvenv"
    venv.create(function_venv, with_pip=False)
    python = function_venv / "bin" / "python"
    install_into(python, "--only-binary", ":all:", "-r", str(source / "requirements.txt"))

    topic = f"team-{unique}"
    port = processes.free_port()
    router_env = clean_env(
        DATABASE_URL=db_url,
        PUBSUB_EMULATOR_HOST=pubsub_emulator,
        DAGRELAY_PROJECT_ID=PROJECT,
        DAGRELAY_EVENTS_TOPIC=topic,
    )
    proc = processes.spawn(
        "archive-router",
        [str(function_venv / "bin" / "functions-framework"), "--source", "main.py",
         "--target", "router", "--signature-type", "cloudevent",
         "--host", "127.0.0.1", "--port", str(port)],
        tmp_path / "router.log",
        router_env,
        cwd=source,
    )  # fmt: skip
    try:
        processes.wait_for(lambda: processes.port_open(port) or not proc.alive(), 60, "router")
        assert proc.alive(), proc.log_tail()
        infra.ensure_subscription(
            PROJECT,
            topic,
            f"team-router-{unique}",
            push_endpoint=f"http://127.0.0.1:{port}/projects/{PROJECT}/topics/{topic}",
        )
        publisher = pubsub_v1.PublisherClient()
        message = {"action": "start_batch", "pipeline": f"{NAME}_orders", "batch_id": "2024-03-01"}
        publisher.publish(
            publisher.topic_path(PROJECT, topic),
            json.dumps(message).encode(),
            action="start_batch",
        ).result(timeout=30)
        status = _wait_batch(db_url, f"{NAME}_orders", "2024-03-01", proc)
    finally:
        proc.stop()
    assert status["batch"] == "SUCCESS", (status, proc.log_tail())
    score = status["outputs"]["score"]
    assert score["orders"] == 5
    assert status["outputs"]["publish"] == {
        "published": score["flagged"],
        "batch": "2024-03-01",
    }


def _wait_batch(url: str, pipeline: str, batch_id: str, proc: Any) -> dict[str, Any]:
    engine = create_engine(url)
    found: dict[str, Any] = {}

    def done() -> bool:
        with engine.connect() as conn:
            status = conn.execute(
                text("SELECT status::text FROM batches WHERE pipeline = :p AND batch_id = :b"),
                {"p": pipeline, "b": batch_id},
            ).scalar_one_or_none()
            outputs = batch_outputs(conn, pipeline, batch_id)
        found.update(batch=status, outputs=outputs)
        return status in ("SUCCESS", "FAILED") or not proc.alive()

    try:
        processes.wait_for(done, 90, f"batch {batch_id}")
    finally:
        engine.dispose()
    return found


def test_the_scaffolds_terraform_passes_fmt_and_checkov(project: Path, tmp_path: Path) -> None:
    root = project / "terraform"
    run(["terraform", "fmt", "-check", "-recursive", str(root)], project, clean_env())
    if not CHECKOV.exists():
        pytest.fail(f"checkov missing: run `make terraform-check` once to install {CHECKOV}")
    out = run(
        [str(CHECKOV), "-d", str(root), "--framework", "terraform", "--skip-download",
         "--compact", "--quiet", "-o", "json"],
        project, clean_env(),
    )  # fmt: skip
    report = json.loads(out)
    summary = report["summary"] if isinstance(report, dict) else report[0]["summary"]
    assert summary["failed"] == 0, out
    assert summary["passed"] > 50  # the module's resources were scanned, not only the root
    git_root = tmp_path / "git-root"
    shutil.copytree(root, git_root)
    main = (git_root / "main.tf").read_text()
    lines = [line for line in main.splitlines() if line.strip().startswith("source = ")]
    assert len(lines) == 1
    git = '  source = "git::https://github.com/dagrelay/dagrelay.git//terraform?ref=v0.1.0"'
    (git_root / "main.tf").write_text(main.replace(lines[0], git))
    run(["terraform", "fmt", "-check", str(git_root)], project, clean_env())
