"""One virtualenv for a team (issue 20), outside the repository: dagrelay from the built wheel
(`make dist`, .ci/dist.py; the run's shared build, tests/dist_cache.py) with the ``local`` and
``testing`` extras, ``dagrelay --version``,
``dagrelay init``, the project's requirements and tests (that venv's pytest), ``dagrelay local up
--project`` on free ports, a batch of the team's pipeline to SUCCESS, ``dagrelay local down``.
Then the same venv takes dagrelay from a git ref of a clone (``git+file://...@<commit>``,
``--no-deps --force-reinstall``: the dependencies are shared) and validates the project with it.

The dependencies come from a wheelhouse kept between runs (``~/.cache/dagrelay-tests/``, keyed by
the pins; the first run fills it), with ``--no-index``: nothing is looked up in the indexes. The
two large installs (the wheel with its extras, the git ref) are made by uv, the dev extra's
installer, in seconds where pip spends half a minute on the same wheels; the project's own
``pip install -r requirements-dev.txt`` is pip's, as its README says. Each step's wall time is
printed (``pytest -s``) and written to test-artifacts/team-venv.json."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from uv import find_uv_bin

from dagrelay.local.processes import wait_for
from tests.dbtools import create_database, drop_database
from tests.dist_cache import Dist, copy_sources
from tests.paths import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900), pytest.mark.long_pole(120)]

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]
EXTRAS = "local,testing"
TIMES_FILE = ROOT / "test-artifacts" / "team-venv.json"


class Steps:
    """Wall time of each step, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 1)

    def report(self) -> str:
        return ", ".join(f"{name} {s:.1f}s" for name, s in self.seconds.items())


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    """Run a command; its stdout (the assertion shows both streams when it fails)."""
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def pip(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    base = [sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check"]
    return run([*base, *args], cwd, env or dict(os.environ))


def uv_install(python: str, *args: str) -> None:
    """``pip install`` into the team's venv, made by uv (tests/integration/test_wheel.py)."""
    run(
        [find_uv_bin(), "pip", "install", "--quiet", "--python", python, *args],
        ROOT,
        dict(os.environ),
    )


def wheelhouse() -> Path:
    """A directory holding wheels of every pin of dagrelay, its local and testing extras and
    its build requirements (and what they need), filled once per set of pins."""
    optional = PYPROJECT["project"]["optional-dependencies"]
    pins = sorted(
        [
            *PYPROJECT["project"]["dependencies"],
            *optional["local"],
            *optional["testing"],
            *PYPROJECT["build-system"]["requires"],
        ]
    )
    key = hashlib.sha256("\n".join([sys.version, *pins]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    house = cache / "dagrelay-tests" / f"wheelhouse-{key}"
    if (house / "complete").exists():
        return house
    partial = house.with_name(f"{house.name}.{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    pip("download", "--dest", str(partial), *pins)
    (partial / "complete").touch()
    try:
        partial.rename(house)
    except OSError:  # another run filled it first
        shutil.rmtree(partial, ignore_errors=True)
    return house


def team_env(env_dir: Path, **extra: str) -> dict[str, str]:
    """The team's shell with its venv activated: nothing of this checkout or this test run."""
    kept = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DAGRELAY_", "PYTHON", "PUBSUB_", "STORAGE_EMULATOR", "VIRTUAL_ENV"))
        and k != "DATABASE_URL"
    }
    path = f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"
    return {**kept, "PATH": path, "VIRTUAL_ENV": str(env_dir), **extra}


def clone(source: Path) -> str:
    """The checkout's sources as a git repository of their own; its commit."""
    copy_sources(source)
    git = ["git", "-C", str(source), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "sources"]):
        run([*git, *args], source, env)
    return run([*git, "rev-parse", "HEAD"], source, env).strip()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_team_venv_from_wheel_then_git_ref(
    template_db: str, shared_dist: Dist, tmp_path: Path
) -> None:
    work = tmp_path / "team-machine"
    work.mkdir()
    assert not work.resolve().is_relative_to(ROOT)
    step = Steps()
    house = wheelhouse()
    offline = ["--no-index", "--find-links", str(house)]

    source = work / "dagrelay-clone"
    commit = clone(source)
    wheel = shared_dist.wheel

    env_dir = work / "venv"
    python = str(env_dir / "bin" / "python")
    dagrelay = str(env_dir / "bin" / "dagrelay")
    with step("install"):
        venv.create(env_dir, with_pip=False)
        uv_install(python, *offline, f"{wheel}[{EXTRAS}]")
    env = team_env(env_dir)
    assert run([dagrelay, "--version"], work, env) == f"dagrelay {VERSION}\n"

    with step("init"):
        run([dagrelay, "init", "team"], work, env)
    team = work / "team"
    with step("requirements"):  # what the scaffold's README installs; dagrelay already is
        pip("--python", python, "install", *offline, "-r", "requirements-dev.txt", cwd=team)
    with step("scaffold tests"):
        out = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], team, env)
    assert "3 passed" in out.splitlines()[-1], out

    name = f"dagrelay_team_{os.getpid()}"
    url = create_database(name, template=template_db)
    stack_dir = work / "stack"
    env = team_env(env_dir, DAGRELAY_LOCAL_STACK_DIR=str(stack_dir))
    state = stack_dir / "state.json"
    output = work / "up.out"
    up: subprocess.Popen[bytes] | None = None
    try:
        with step("local up"), output.open("w") as sink:
            up = subprocess.Popen(
                [dagrelay, "local", "up", "--project", "."],
                cwd=team,
                env={**env, "DATABASE_URL": url},
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            wait_for(lambda: state.exists() or up.poll() is not None, 180, "the stack")
        assert up.poll() is None, output.read_text()
        info = json.loads(state.read_text())
        pids = list(info["pids"].values())
        shell = {
            **env,
            "DATABASE_URL": info["database_url"],
            "PUBSUB_EMULATOR_HOST": info["pubsub_emulator_host"],
            "DAGRELAY_PROJECT_ID": info["project_id"],
            "DAGRELAY_EVENTS_TOPIC": info["events_topic"],
        }
        with step("batch"):
            run([dagrelay, "pipeline", "apply", "pipelines/orders.py"], team, shell)
            run(
                [dagrelay, "trigger", "team_orders", "2024-03-01", "--wait", "--timeout", "120"],
                team,
                shell,
            )
        status = run([dagrelay, "status", "2024-03-01", "--json"], team, shell)
        (batch,) = json.loads(status)["batches"]
        assert batch["status"] == "SUCCESS", status
        assert {t["task"]: t["status"] for t in batch["tasks"]} == dict.fromkeys(
            ("extract", "score", "publish"), "SUCCESS"
        )

        with step("local down"):
            assert run([dagrelay, "local", "down"], team, env) == "local stack is down\n"
            assert up.wait(timeout=60) == 0, output.read_text()
            wait_for(lambda: not any(alive(p) for p in pids), 30, "the stack's processes")
        assert not state.exists()
    finally:
        if up is not None and up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=30)
        if state.exists():  # up's children run in sessions of their own: by PID
            for pid in json.loads(state.read_text())["pids"].values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        drop_database(name)

    with step("git ref"):
        ref = f"dagrelay[{EXTRAS}] @ git+file://{source}@{commit}"
        uv_install(python, "--no-deps", "--reinstall", *offline, ref)
    direct = json.loads(
        next(
            (env_dir / "lib").glob("python*/site-packages/dagrelay-*.dist-info/direct_url.json")
        ).read_text()
    )
    assert direct["vcs_info"]["commit_id"] == commit
    env = team_env(env_dir)
    assert run([dagrelay, "--version"], work, env) == f"dagrelay {VERSION}\n"
    validated = run([dagrelay, "pipeline", "validate", "pipelines/orders.py"], team, env)
    assert "team_orders" in validated, validated
    probe = (
        "from dagrelay import resources; import dagrelay.local.commands, dagrelay.local.demo; "
        "print(resources.function_entry()); "
        "print(resources.schema_dir() / 'pipelines/data/sales_2024-03.csv')"
    )
    entry, demo_csv = run([python, "-c", probe], work, env).split()
    assert Path(entry).is_relative_to(env_dir)
    assert Path(demo_csv).is_file()

    TIMES_FILE.parent.mkdir(exist_ok=True)
    TIMES_FILE.write_text(json.dumps(step.seconds, indent=2) + "\n")
    print(f"\nteam venv: {step.report()}")
