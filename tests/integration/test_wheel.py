"""The wheel works on its own: built from the sources, installed into a fresh virtualenv, its
``dagrelay`` command runs from a directory outside the repository against the real PostgreSQL
and the Pub/Sub emulator, reading the schema and migrations the wheel carries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from google.cloud import pubsub_v1
from sqlalchemy import create_engine, text
from uv import find_uv_bin

from dagrelay.ops.packaging import build_archive
from dagrelay.store import migrate
from tests.dist_cache import Dist
from tests.integration.test_cli import pull_one
from tests.paths import PYTHON_MONTHLY_PROFIT

pytestmark = [pytest.mark.integration, pytest.mark.long_pole(30)]

REPO = Path(__file__).resolve().parents[2]
PROJECT = "dagrelay-test"
Command = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def wheel(shared_dist: Dist) -> Path:
    """The wheel `make dist` builds from a clean copy of the sources (no build/ or egg-info of the
    checkout can leak into it), shared by every test of the run (tests/dist_cache.py)."""
    return shared_dist.wheel


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the wheel and its pinned dependencies; returns its bin/."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)
    install_into(env_dir / "bin" / "python", "--only-binary", ":all:", str(wheel))
    return env_dir / "bin"


def install_into(python: Path, *args: str, cwd: Path | None = None) -> None:
    """``pip install`` into another virtualenv, done by uv (the dev extra's installer): the same
    wheels and pins in seconds, where pip spends about a minute looking each package up."""
    result = subprocess.run(
        [find_uv_bin(), "pip", "install", "--quiet", "--python", str(python), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    assert not cwd.resolve().is_relative_to(REPO)
    return cwd


@pytest.fixture
def dagrelay(installed: Path, elsewhere: Path, empty_db_url: str, pubsub_emulator: str) -> Command:
    """Run the wheel's ``dagrelay`` in ``elsewhere`` with nothing of the checkout in reach."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DAGRELAY_", "PYTHON"))},
        "DATABASE_URL": empty_db_url,
        "PUBSUB_EMULATOR_HOST": pubsub_emulator,
        "DAGRELAY_PROJECT_ID": PROJECT,
    }

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(installed / "dagrelay"), *args],
            cwd=elsewhere,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    return run


def test_wheel_holds_the_package_and_its_data_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"dagrelay", "dagrelay-0.1.0.dist-info"}
    for expected in (
        "dagrelay/_schema/sql/tasks.sql",
        "dagrelay/_schema/messages/start_batch.schema.json",
        "dagrelay/_schema/pipeline.schema.json",
        "dagrelay/_migrations/env.py",
        "dagrelay/_migrations/script.py.mako",
        "dagrelay/_migrations/versions/0001_core_schema.py",
        "dagrelay/_function/main.py",
        "dagrelay/_schema/pipelines/data/sales_2024-03.csv",  # dagrelay local demo's files
        "dagrelay/local/stack.py",  # the local stack (its dependencies: the local extra)
        "dagrelay/dashboard/static/style.css",
        "dagrelay/py.typed",
    ):
        assert expected in names
    demo_data = "dagrelay/_schema/pipelines/data/"
    junk = [
        n
        for n in names
        if "__pycache__" in n or "egg-info" in n or (n.endswith(".csv") and demo_data not in n)
    ]
    assert junk == []
    assert [n for n in names if n.startswith("dagrelay/_function/")] == [
        "dagrelay/_function/main.py"
    ]


def test_installed_cli_works_from_any_directory(
    dagrelay: Command, installed: Path, elsewhere: Path, empty_db_url: str, unique: str
) -> None:
    probe = "import dagrelay.resources as r; print(r.schema_dir()); print(r.migrations_dir())"
    where = subprocess.run(
        [str(installed / "python"), "-c", probe],
        cwd=elsewhere,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert [Path(p).name for p in where] == ["_schema", "_migrations"]
    assert all(Path(p).is_relative_to(installed.parent) for p in where)

    assert "trigger" in dagrelay("--help").stdout
    assert dagrelay("db", "upgrade").stdout == f"database at revision {migrate.head()}\n"

    shutil.copy(PYTHON_MONTHLY_PROFIT, elsewhere / "pipeline.yaml")
    applied = dagrelay("pipeline", "apply", "pipeline.yaml").stdout
    assert applied.startswith("pipeline monthly_profit: 3 created")
    engine = create_engine(empty_db_url)
    with engine.connect() as conn:
        tasks = conn.execute(text("SELECT name FROM tasks ORDER BY name")).scalars().all()
        edges = conn.execute(text("SELECT count(*) FROM task_dependencies")).scalar_one()
    engine.dispose()
    assert tasks == ["calculate_profit", "load_expenses", "load_sales"]
    assert edges == 2

    topic = f"events-{unique}"
    subscription = _subscribed_topic(topic)
    published = dagrelay(
        "trigger", "monthly_profit", "2024-03", "-p", "n=3", DAGRELAY_EVENTS_TOPIC=topic
    )
    message = pull_one(subscription)
    assert f"(message id {message.message_id})" in published.stdout
    assert json.loads(message.data) | {"triggered_by": "-"} == {
        "action": "start_batch",
        "pipeline": "monthly_profit",
        "batch_id": "2024-03",
        "params": {"n": 3},
        "triggered_by": "-",
    }


def test_installed_build_function_matches_the_checkout(dagrelay: Command, elsewhere: Path) -> None:
    """The archive built from the wheel is byte-for-byte the one built from the checkout."""
    dagrelay("build-function", "--out", "function.zip")
    from_wheel = (elsewhere / "function.zip").read_bytes()
    from_checkout = build_archive(elsewhere / "checkout.zip").read_bytes()
    assert from_wheel == from_checkout


def test_local_stack_without_its_extra_names_the_pip_command(
    installed: Path, elsewhere: Path
) -> None:
    """The wheel alone has no emulators: `dagrelay local up` says how to get them."""
    result = subprocess.run(
        [str(installed / "dagrelay"), "local", "up"],
        cwd=elsewhere,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "missing: bqemulator" in result.stderr
    assert "pip install 'dagrelay[local]'" in result.stderr


def _subscribed_topic(topic_id: str) -> str:
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.create_topic(name=publisher.topic_path(PROJECT, topic_id)).name
    with pubsub_v1.SubscriberClient() as subscriber:
        subscription: str = subscriber.subscription_path(PROJECT, f"wheel-{topic_id}")
        subscriber.create_subscription(name=subscription, topic=topic)
    return subscription
