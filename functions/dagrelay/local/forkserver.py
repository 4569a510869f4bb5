"""A fork server for the local stack's Python processes, opt-in: ``DAGRELAY_LOCAL_FORK_SERVER=1``
(the e2e tier sets it, tests/e2e/conftest.py).

Every functions-framework server and pull worker a stack starts would import the same modules
(SQLAlchemy, pg8000, the Pub/Sub client, flask, dagrelay): 2-3 CPU-s each, for dozens of
processes in a test run. Here one zygote per process that spawns (``python -m
dagrelay.local.forkserver``) imports them once — creating no client, engine, thread or channel —
and forks a child per request that becomes ``python -m <module> ...``: a session of its own,
output appended to the log, the working directory and the whole environment of the request,
its own random seed, no descriptor but 0, 1 and 2; then ``runpy`` runs the module and the
interpreter ends as that command would (atexit, non-daemon threads). The zygote reaps its
children and writes each exit status on a socket that only the spawner holds: ``ForkedChild``
offers what ``dagrelay.local.processes`` uses of a ``Popen`` (pid, poll, wait, returncode).

Only ``[sys.executable, "-m", <ENTRY_MODULES>, ...]`` goes through it, and only when the
request's start-up environment (``STARTUP_PREFIXES``: what the interpreter, gRPC, protobuf and
their C extensions read once, at start or at import) equals the zygote's; anything else keeps
``Popen``. Modules the zygote imported are not looked up again on the child's PYTHONPATH (a
team project's own modules are, since the zygote never imports them). If the zygote cannot
start, or its imports started a thread, spawn falls back to ``Popen`` with a warning.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import io
import json
import logging
import os
import random
import runpy
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

ENV = "DAGRELAY_LOCAL_FORK_SERVER"
ENTRY_MODULES = frozenset({"functions_framework", "dagrelay.local"})
# What the zygote imports: functions-framework's CLI and server (flask, gunicorn), and what
# functions/main.py's router, status and operate functions import on their first request, and
# the pull worker and its command (dagrelay.local.commands, which imports the stack and the demo,
# pyarrow among their imports, only in the commands that use them: pyarrow starts threads).
PRELOAD = (
    "functions_framework._cli",
    "functions_framework._http",
    "dagrelay.router.wiring",
    "dagrelay.dashboard.app",
    "dagrelay.handlers.cloudrun",
    "dagrelay.local.commands",
    "dagrelay.local.worker",
)
# Variables read once per process (interpreter start, or module level in a preloaded module:
# grpc's GRPC_*, protobuf's PROTOCOL_BUFFERS_*, opentelemetry's OTEL_*, aiohttp's and yarl's
# *_NO_EXTENSIONS, wrapt's WRAPT_*). PYTHONPATH and PYTHONUNBUFFERED the child applies itself.
STARTUP_PREFIXES = ("PYTHON", "GRPC_", "PROTOCOL_BUFFERS_", "OTEL_", "WRAPT_", "LD_", "MALLOC_")
STARTUP_NAMES = frozenset({"LANG", "LC_ALL", "LC_CTYPE"})
APPLIED_BY_CHILD = frozenset({"PYTHONPATH", "PYTHONUNBUFFERED"})
READY_TIMEOUT_S = 120.0  # the zygote's imports on a loaded machine
START_TIMEOUT_S = 30.0  # a forked child's first message
MAX_REQUEST = 1 << 20


class ForkServerError(RuntimeError):
    """The zygote did not start, or did not answer a request."""


def startup_env(env: Mapping[str, str]) -> dict[str, str]:
    """The part of ``env`` a forked child cannot take on after the zygote read it."""
    return {
        key: value
        for key, value in env.items()
        if key not in APPLIED_BY_CHILD
        and (
            key.startswith(STARTUP_PREFIXES)
            or key in STARTUP_NAMES
            or key.endswith("_NO_EXTENSIONS")
        )
    }


def entry_module(argv: Sequence[str]) -> str | None:
    """The module ``argv`` runs, if it is ``python -m`` one of ENTRY_MODULES on this Python."""
    if len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m":
        return argv[2] if argv[2] in ENTRY_MODULES else None
    return None


# -- the spawner's side ---------------------------------------------------------------------


class ForkedChild:
    """A child of the zygote, as its spawner sees it: what ``Popen`` offers of pid, poll(),
    wait() and returncode. The exit status arrives on ``status`` (the zygote reaped it); if the
    zygote went first, the status is lost (LOST) and only the process's end is watched."""

    LOST = -1

    def __init__(self, pid: int, status: socket.socket, returncode: int | None = None) -> None:
        self.pid = pid
        self.returncode = returncode
        self._status: socket.socket | None = status
        self._lock = threading.Lock()
        if returncode is not None:
            self._close()

    def __del__(self) -> None:
        self._close()  # as with a dropped Popen, the child runs on

    def poll(self) -> int | None:
        return self._read(0.0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._read(timeout)
        if code is None:
            raise subprocess.TimeoutExpired([str(self.pid)], timeout or 0.0)
        return code

    def _read(self, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self.returncode is None and self._status is not None:
                self._receive(self._status, timeout)
            while self.returncode is None and self._status is None:
                if not _running(self.pid):
                    self.returncode = self.LOST
                elif deadline is not None and time.monotonic() >= deadline:
                    break
                else:
                    time.sleep(0.05)
            return self.returncode

    def _receive(self, status: socket.socket, timeout: float | None) -> None:
        status.settimeout(timeout)
        try:
            message = status.recv(4096)
        except (TimeoutError, BlockingIOError):
            return
        if message:
            self.returncode = json.loads(message)["exit"]
        self._close()

    def _close(self) -> None:
        if self._status is not None:
            self._status.close()
            self._status = None


def _running(pid: int) -> bool:
    """Neither gone nor a zombie (an orphan's parent may be slow to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class ForkServer:
    """A zygote of this process, started with this process's environment."""

    def __init__(self, popen: subprocess.Popen[bytes], control: socket.socket) -> None:
        self.popen = popen
        self.owner = os.getpid()
        self.startup = startup_env(os.environ)
        self._control = control
        self._lock = threading.Lock()

    @classmethod
    def start(cls, log_path: Path, preload: Sequence[str] = PRELOAD) -> ForkServer:
        """Start a zygote that imports ``preload`` and wait for it; ForkServerError if it
        does not come up."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        zygote = [sys.executable, "-m", "dagrelay.local.forkserver", str(theirs.fileno())]
        with theirs, log_path.open("ab") as zygote_log:
            popen = subprocess.Popen(
                [*zygote, *preload],
                stdin=subprocess.DEVNULL,
                stdout=zygote_log,
                stderr=subprocess.STDOUT,
                pass_fds=[theirs.fileno()],
                start_new_session=True,
            )
        server = cls(popen, ours)
        ours.settimeout(READY_TIMEOUT_S)
        try:
            ready = json.loads(ours.recv(MAX_REQUEST) or b'{"error": "exited"}')
        except (OSError, ValueError) as exc:
            ready = {"error": repr(exc)}
        if "error" in ready:
            server.close()
            raise ForkServerError(f"the fork server did not start: {ready['error']} ({log_path})")
        return server

    def accepts(self, argv: Sequence[str], env: Mapping[str, str]) -> bool:
        return entry_module(argv) is not None and startup_env(env) == self.startup

    def spawn(
        self, name: str, argv: Sequence[str], log: IO[bytes], env: Mapping[str, str], cwd: Path
    ) -> ForkedChild:
        """Fork ``argv`` (``accepts`` it) with its output on ``log``; returns once the child
        is in a session of its own (its process group can be signalled)."""
        request = {"name": name, "argv": list(argv), "env": dict(env), "cwd": str(cwd)}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            try:
                with self._lock:
                    fds = [log.fileno(), theirs.fileno()]
                    socket.send_fds(self._control, [json.dumps(request).encode()], fds)
            except OSError as exc:
                ours.close()
                raise ForkServerError(f"the fork server is gone: {exc!r}") from exc
        ours.settimeout(START_TIMEOUT_S)
        try:
            first = json.loads(ours.recv(4096) or b"{}")
        except (OSError, ValueError) as exc:
            ours.close()
            raise ForkServerError(f"no answer from the fork server for {name}: {exc!r}") from exc
        if "pid" not in first:
            ours.close()
            raise ForkServerError(f"the fork server closed the request for {name}")
        return ForkedChild(first["pid"], ours, first.get("exit"))

    def close(self, timeout_s: float = 10.0) -> None:
        """Close the control socket: the zygote leaves once its last child has exited (it
        reaps them); wait for that up to ``timeout_s``, then leave it to it."""
        self._control.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout_s)


_server: ForkServer | None = None
_unavailable = False
_server_lock = threading.Lock()


def server_for(argv: Sequence[str], env: Mapping[str, str], log_dir: Path) -> ForkServer | None:
    """This process's fork server if ``DAGRELAY_LOCAL_FORK_SERVER`` is set (here, now) and it
    accepts ``argv`` with ``env``; started on first use, its log in ``log_dir``."""
    global _server, _unavailable  # noqa: PLW0603 - one zygote per spawning process
    if os.environ.get(ENV) != "1" or entry_module(argv) is None:
        return None
    with _server_lock:
        if _server is not None and _server.owner != os.getpid():
            _server, _unavailable = None, False  # a forked copy of the spawner: its own zygote
        if _server is None and not _unavailable:
            try:
                _server = ForkServer.start(log_dir / f"forkserver-{os.getpid()}.log")
            except ForkServerError as exc:
                log.warning("spawning without the fork server: %s", exc)
                _unavailable = True
                return None
            atexit.register(_server.close)
        server = _server
    return server if server is not None and server.accepts(argv, env) else None


def discard(server: ForkServer, failure: ForkServerError) -> None:
    """Stop using ``server``, which failed a request: this and later spawns use Popen."""
    global _server, _unavailable
    log.warning("spawning without the fork server from now on: %s", failure)
    with _server_lock:
        if _server is server:
            _server, _unavailable = None, True
    server.close()


# -- the zygote's side ----------------------------------------------------------------------


class _Zygote:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, status)
        own = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        # A `python -m` path without its first entry (the working directory) and PYTHONPATH.
        self.base_path = [p for p in sys.path[1:] if p not in own]

    def serve(self) -> Callable[[], None] | None:
        """Fork on each request until the spawner closes the control socket, then reap the
        children left (an orphan would stay a zombie where PID 1 does not reap: its pid looks
        alive). In a child, returns what turns it into the requested command; in the zygote,
        None at the end."""
        self.selector.register(self.control, selectors.EVENT_READ)
        listening = True
        while listening or self.children:
            for key, _ in self.selector.select():
                if key.fileobj is not self.control:
                    self._reap(int(key.fd))
                    continue
                message, fds, _, _ = socket.recv_fds(self.control, MAX_REQUEST, 2)
                if not message:
                    self.selector.unregister(self.control)
                    self.control.close()
                    listening = False
                    continue
                become = self._fork(json.loads(message), fds[0], socket.socket(fileno=fds[1]))
                if become is not None:
                    return become
        return None

    def _fork(
        self, request: dict[str, Any], log_fd: int, status: socket.socket
    ) -> Callable[[], None] | None:
        pid = os.fork()
        if pid == 0:
            self.selector.close()
            self.control.close()  # still open: a request came on it
            for pidfd, (_, other) in self.children.items():
                os.close(pidfd)
                other.close()
            return lambda: _become(request, log_fd, status, self.base_path)
        os.close(log_fd)
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = (pid, status)
        self.selector.register(pidfd, selectors.EVENT_READ)
        return None

    def _reap(self, pidfd: int) -> None:
        pid, status = self.children.pop(pidfd)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, wait_status = os.waitpid(pid, 0)
        report = {"pid": pid, "exit": os.waitstatus_to_exitcode(wait_status)}
        with contextlib.suppress(OSError):  # the spawner is gone: nobody to tell
            status.send(json.dumps(report).encode())
        status.close()


def _become(request: dict[str, Any], log_fd: int, status: socket.socket, base: list[str]) -> None:
    """In the forked child: become ``python -m <module> <args>`` as spawn would have run it."""
    os.setsid()
    status.send(json.dumps({"pid": os.getpid()}).encode())
    status.close()
    null = os.open(os.devnull, os.O_RDONLY)
    for fd, target in ((null, 0), (log_fd, 1), (log_fd, 2)):
        os.dup2(fd, target)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    env: dict[str, str] = request["env"]
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(env)
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [request["cwd"], *extra, *base]
    _fresh_stdio(unbuffered=bool(env.get("PYTHONUNBUFFERED")))
    random.seed()
    _name_process(request["name"])
    module = request["argv"][2]
    sys.argv = [module, *request["argv"][3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _fresh_stdio(*, unbuffered: bool) -> None:
    """New sys.stdin/stdout/stderr on fds 0-2, buffered as a fresh interpreter's would be
    (stderr line-buffered; PYTHONUNBUFFERED: neither stdout nor stderr buffered)."""
    encoding = sys.stdout.encoding if sys.stdout else "utf-8"

    def writer(fd: int, errors: str, line_buffering: bool) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "wb", closefd=False)
        buffer: io.RawIOBase | io.BufferedWriter = raw if unbuffered else io.BufferedWriter(raw)
        return io.TextIOWrapper(
            buffer,  # type: ignore[arg-type]  # a raw FileIO, as python -u's stdio
            encoding=encoding,
            errors=errors,
            line_buffering=line_buffering and not unbuffered,
            write_through=unbuffered,
        )

    stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "rb", closefd=False)), encoding)
    # sys.__stdout__ and the others stay the zygote's objects, on the same fds (empty buffers).
    sys.stdin = stdin
    sys.stdout = writer(1, "strict", line_buffering=False)
    sys.stderr = writer(2, "backslashreplace", line_buffering=True)


def _name_process(name: str) -> None:
    """The spawn's name (after the last colon) as the process's name in ps -o comm and top:
    every child's command line is the zygote's."""
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(name.rsplit(":", 1)[-1][:15])


def _preload(modules: Sequence[str]) -> str | None:
    """Import ``modules``; the reason not to fork, if any (a failed import, a thread started)."""
    try:
        for module in modules:
            importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - reported to the spawner, which uses Popen
        return f"importing {module}: {exc!r}"
    if not hasattr(os, "pidfd_open"):
        return "this system has no pidfd_open (Linux 5.3)"
    threads = os.listdir("/proc/self/task")
    if len(threads) != 1 or threading.active_count() != 1:
        return f"its imports started threads ({len(threads)} tasks): forking is unsafe"
    return None


def main(control_fd: int, preload: Sequence[str]) -> Callable[[], None] | None:
    control = socket.socket(fileno=control_fd)
    problem = _preload(preload)
    control.send(json.dumps({"error": problem} if problem else {"ready": True}).encode())
    if problem:
        return None
    gc.collect()
    gc.freeze()  # the imported objects stay out of the children's collections: fewer copied pages
    sys.stdout.flush()
    sys.stderr.flush()
    return _Zygote(control).serve()


if __name__ == "__main__":
    become = main(int(sys.argv[1]), sys.argv[2:])
    if become is not None:
        become()
