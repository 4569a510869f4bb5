"""Starting and stopping the local stack's processes: the Pub/Sub emulator and the router under
functions-framework. Each is started in its own process group and stopped by its PID; the
Python ones forked by a zygote when DAGRELAY_LOCAL_FORK_SERVER=1 (dagrelay/local/forkserver.py)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import requests

from dagrelay import resources
from dagrelay.local import crashes, forkserver

CRASH_ROUTER = Path(__file__).resolve().parent / "crash_router.py"
WARM_ROUTER = Path(__file__).resolve().parent / "warm_router.py"
EMULATOR_LAUNCHER = Path(
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
)


class StackError(RuntimeError):
    """Something the local stack needs is missing or did not come up."""


def wait_for(
    condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.05
) -> None:
    """Poll ``condition`` until it is true; StackError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(poll_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Child(Protocol):
    """What a ManagedProcess uses of its process: a Popen, or a fork server's ForkedChild."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...


@dataclass
class ManagedProcess:
    name: str
    pid: int
    log_path: Path
    popen: Child | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL if it has not gone within ``timeout_s``."""
        stop_all([self], timeout_s)

    def signal_group(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to the process group; False if it is gone already."""
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def stop_all(procs: Sequence[ManagedProcess], timeout_s: float = 10.0) -> None:
    """Stop several processes together: SIGTERM every group (in the order given), wait for all
    of them, then SIGKILL whatever is left after ``timeout_s``. One by one, their exits would add
    up (a pull worker leaves only when its pull of up to 5 s returns)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        signalled = [p for p in procs if p.signal_group(sig)]
        try:
            wait_for(
                lambda: not any(p.alive() for p in signalled),  # noqa: B023
                timeout_s,
                f"{', '.join(p.name for p in signalled)} to exit",
            )
            break
        except StackError:
            continue
    for proc in procs:
        if proc.popen is not None:
            proc.popen.wait(timeout=timeout_s)


def spawn(
    name: str, argv: list[str], log_path: Path, env: Mapping[str, str], cwd: Path | None = None
) -> ManagedProcess:
    """Start ``argv`` in a session of its own, its output appended to ``log_path``, in ``cwd``
    (default: this process's working directory). ``python -m`` a stack's module is forked by
    the fork server when it is on (dagrelay/local/forkserver.py), else started by Popen."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    server = forkserver.server_for(argv, env, log_path.parent)
    with log_path.open("ab") as log:
        if server is not None:
            try:
                child = server.spawn(name, argv, log, env, cwd or Path.cwd())
            except forkserver.ForkServerError as exc:
                forkserver.discard(server, exc)
            else:
                return ManagedProcess(name, child.pid, log_path, child)
        popen = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    return ManagedProcess(name, popen.pid, log_path, popen)


def start_pubsub_emulator(port: int, project: str, workdir: Path) -> ManagedProcess:
    """The Pub/Sub emulator of the machine's Google Cloud CLI, Java started directly."""
    launcher = EMULATOR_LAUNCHER if EMULATOR_LAUNCHER.exists() else None
    if launcher is None:
        gcloud = shutil.which("gcloud")
        if gcloud is None:
            raise StackError("the Pub/Sub emulator needs the Google Cloud CLI (gcloud) installed")
        argv = [
            gcloud,
            "beta",
            "emulators",
            "pubsub",
            "start",
            f"--host-port=127.0.0.1:{port}",
            f"--project={project}",
        ]
    else:
        argv = [str(launcher), "--host=127.0.0.1", f"--port={port}"]
    data_dir = workdir / f"pubsub-{port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = spawn("pubsub-emulator", argv, workdir / f"pubsub-{port}.log", os.environ)
    try:
        wait_for(lambda: port_open(port) or not proc.alive(), 60, "the Pub/Sub emulator")
    except StackError:
        proc.stop()
        raise
    if not proc.alive():
        raise StackError(f"the Pub/Sub emulator exited:\n{proc.log_tail()}")
    return proc


def start_router(
    port: int,
    env: Mapping[str, str],
    workdir: Path,
    target: str = "router",
    source: Path | None = None,
    *,
    warm: bool = True,
) -> ManagedProcess:
    """functions/main.py's ``target`` (or ``source``'s) under functions-framework on
    127.0.0.1:port. The router with crash hooks (dagrelay/local/crash_router.py) when the
    environment arms crash points; else, ``warm``, main.py's own router through a source that
    imports its code in the gunicorn master, before the worker is forked, so neither the first
    push nor a worker forked again after a timeout pays the import (dagrelay/local/
    warm_router.py); not ``warm``, main.py itself, which imports it on its first push (for a
    router that may never get one: pull workers take the events). functions-framework serves
    ``THREADS`` requests at once (from ``env``; its default is 4 per core)."""
    if source is None:
        source = resources.function_entry()
        if target == "router" and env.get(crashes.POINTS_ENV):
            source = CRASH_ROUTER
        elif target == "router" and warm:
            source = WARM_ROUTER
    argv = [
        sys.executable,
        "-m",
        "functions_framework",
        "--source",
        str(source),
        "--target",
        target,
        "--signature-type",
        "cloudevent" if target == "router" else "http",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = spawn(f"functions-framework:{target}", argv, workdir / f"{target}-{port}.log", env)

    def ready() -> bool:
        if not proc.alive():
            return True
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=0.5)
        except requests.RequestException:
            return False
        return True

    try:
        wait_for(ready, 60, f"functions-framework ({target})")
    except StackError:
        proc.stop()
        raise
    if not proc.alive():
        raise StackError(f"functions-framework exited:\n{proc.log_tail()}")
    return proc


def start_worker(
    env: Mapping[str, str], workdir: Path, subscription: str, n: int
) -> ManagedProcess:
    """A pull worker (``python -m dagrelay.local worker``) sharing the router's code."""
    argv = [sys.executable, "-m", "dagrelay.local", "worker", "--subscription", subscription]
    return spawn(f"worker-{n}", argv, workdir / f"worker-{n}.log", env)
