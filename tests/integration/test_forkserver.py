"""The fork server's contract (dagrelay/local/forkserver.py): a forked child is what
``spawn``'s Popen would have started — the request's environment, working directory, arguments
and path, output appended to the log, stdin empty, no descriptor but 0-2, a session of its own,
a fresh random seed, default signal handlers — and its ManagedProcess keeps the contract: alive,
stop killing the whole group (SIGKILL after the timeout), the exit status, the log's tail.

The children run tests/integration/fork_probe.py, which reports what it sees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dagrelay.local import forkserver, processes
from dagrelay.local.forkserver import ForkedChild, ForkServer
from dagrelay.local.processes import ManagedProcess, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROBE = [sys.executable, "-m", "tests.integration.fork_probe"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    """The zygote spawn uses when switched on: this worker's, with the stack's imports (one,
    they cost seconds of CPU); switched on for this module's tests."""
    argv = [sys.executable, "-m", "functions_framework"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(forkserver.ENV, "1")
        zygote = forkserver.server_for(argv, os.environ, tmp_path_factory.mktemp("zygote"))
        assert zygote is not None
        yield zygote


def fork(
    server: ForkServer, tmp_path: Path, *actions: str, env: dict[str, str] | None = None
) -> tuple[ManagedProcess, Path]:
    """Fork the probe; its ManagedProcess (as spawn builds it) and its report's path."""
    report, log_path = tmp_path / "report.json", tmp_path / "probe.log"
    with log_path.open("ab") as log:
        child = server.spawn(
            "test:probe", [*PROBE, str(report), *actions], log, env or dict(os.environ), ROOT
        )
    return ManagedProcess("probe", child.pid, log_path, child), report


def read_report(proc: ManagedProcess, report: Path) -> dict[str, Any]:
    wait_for(lambda: report.exists() or not proc.alive(), 30, "the probe's report")
    assert report.exists(), proc.log_tail()
    seen: dict[str, Any] = json.loads(report.read_text())
    return seen


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody has reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_child_takes_the_requests_environment_cwd_argv_and_path(
    server: ForkServer, tmp_path: Path
) -> None:
    extra = tmp_path / "team"
    env = {**os.environ, "FORK_PROBE": "yes", "PYTHONPATH": str(extra)}
    env.pop("HOME", None)  # the environment is replaced, not merged
    proc, report = fork(server, tmp_path, "exit", "0", env=env)
    seen = read_report(proc, report)
    assert seen["env"] == env
    assert seen["cwd"] == str(ROOT)
    assert seen["argv"][1:] == [str(report), "exit", "0"]
    assert seen["argv"][0].endswith("fork_probe.py")
    assert seen["path"][:2] == [str(ROOT), str(extra)]
    assert proc.popen is not None
    assert proc.popen.wait(timeout=30) == 0


def test_child_has_only_stdio_its_own_session_and_no_threads(
    server: ForkServer, tmp_path: Path
) -> None:
    proc, report = fork(server, tmp_path, "exit", "0")
    seen = read_report(proc, report)
    assert seen["fds"] == []
    assert seen["stdin"] == ""
    assert seen["pid"] == proc.pid
    assert seen["sid"] == seen["pgid"] == proc.pid
    assert seen["threads"] == 1
    assert seen["sigint_default"]
    assert seen["sigterm_default"]
    assert proc.popen is not None
    assert proc.popen.wait(timeout=30) == 0


def test_children_draw_different_random_numbers(server: ForkServer, tmp_path: Path) -> None:
    draws = []
    for n in range(2):
        (tmp_path / str(n)).mkdir()
        proc, report = fork(server, tmp_path / str(n), "exit", "0")
        draws.append(read_report(proc, report)["random"])
        assert proc.popen is not None
        assert proc.popen.wait(timeout=30) == 0
    assert draws[0] != draws[1]


def test_output_is_appended_to_the_log_and_the_exit_code_reported(
    server: ForkServer, tmp_path: Path
) -> None:
    (tmp_path / "probe.log").write_text("before\n")
    proc, _ = fork(server, tmp_path, "exit", "3")
    assert proc.popen is not None
    assert proc.popen.wait(timeout=30) == 3
    assert not proc.alive()
    assert proc.log_tail().splitlines() == ["before", "probe: hello", "probe: atexit ran"]


def test_stop_kills_the_whole_group(server: ForkServer, tmp_path: Path) -> None:
    proc, report = fork(server, tmp_path, "grandchild", "wait")
    grandchild = read_report(proc, report)["grandchild"]
    assert proc.alive()
    proc.stop(timeout_s=10)
    assert not proc.alive()
    assert proc.popen is not None
    assert proc.popen.returncode == -signal.SIGTERM
    wait_for(lambda: gone(grandchild), 10, "the probe's grandchild to exit")


def test_stop_escalates_to_sigkill_after_the_timeout(server: ForkServer, tmp_path: Path) -> None:
    proc, report = fork(server, tmp_path, "ignore-term", "wait")
    read_report(proc, report)
    proc.stop(timeout_s=0.5)
    assert proc.popen is not None
    assert proc.popen.returncode == -signal.SIGKILL


def test_wait_times_out_while_the_child_runs(server: ForkServer, tmp_path: Path) -> None:
    proc, report = fork(server, tmp_path, "wait")
    read_report(proc, report)
    assert proc.popen is not None
    with pytest.raises(subprocess.TimeoutExpired):
        proc.popen.wait(timeout=0.1)
    assert proc.popen.poll() is None
    proc.stop()


def test_spawn_forks_a_stack_entry_point_only_when_switched_on(
    server: ForkServer, tmp_path: Path
) -> None:
    argv = [sys.executable, "-m", "functions_framework", "--help"]
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(forkserver.ENV)
        off = processes.spawn("ff-help", argv, tmp_path / "off.log", os.environ)
    assert isinstance(off.popen, subprocess.Popen)
    off.popen.wait(timeout=60)

    on = processes.spawn("ff-help", argv, tmp_path / "on.log", os.environ)
    assert isinstance(on.popen, ForkedChild)
    assert on.popen.wait(timeout=60) == 0
    assert "Usage: python -m functions_framework" in on.log_tail()
    bad = processes.spawn("ff-bad", [*argv[:3], "--no-such"], tmp_path / "bad.log", os.environ)
    assert isinstance(bad.popen, ForkedChild)
    assert bad.popen.wait(timeout=60) == 2
    other = processes.spawn("true", ["true"], tmp_path / "true.log", os.environ)
    assert isinstance(other.popen, subprocess.Popen)
    other.popen.wait(timeout=60)
    seed = str(int(os.environ.get("PYTHONHASHSEED", "0").replace("random", "0")) + 1)
    changed = {**os.environ, "PYTHONHASHSEED": seed}  # read at start: the zygote's is other
    hashed = processes.spawn("ff-help", argv, tmp_path / "seed.log", changed)
    assert isinstance(hashed.popen, subprocess.Popen)
    hashed.popen.wait(timeout=60)


def test_zygote_leaves_after_its_spawner_and_last_child(tmp_path: Path) -> None:
    zygote = ForkServer.start(tmp_path / "forkserver.log", preload=())
    proc, report = fork(zygote, tmp_path, "wait")
    read_report(proc, report)
    zygote.close(timeout_s=0.5)
    assert zygote.popen.poll() is None  # it stays to reap its child
    assert proc.alive()  # which runs on until its spawner stops it
    proc.stop()
    assert proc.popen is not None
    assert proc.popen.returncode == -signal.SIGTERM
    assert zygote.popen.wait(timeout=30) == 0


def test_a_child_outliving_a_killed_zygote_is_watched_to_its_end(tmp_path: Path) -> None:
    zygote = ForkServer.start(tmp_path / "forkserver.log", preload=())
    proc, report = fork(zygote, tmp_path, "wait")
    read_report(proc, report)
    zygote.popen.kill()
    zygote.close()
    assert proc.alive()  # the status is lost with the zygote, not the child
    proc.stop()
    assert not proc.alive()
    assert proc.popen is not None
    assert proc.popen.returncode == ForkedChild.LOST
