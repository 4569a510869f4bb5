"""A child for tests/integration/test_forkserver.py: ``python -m tests.integration.fork_probe
REPORT [grandchild] [ignore-term] [exit N | wait]`` writes what it sees (ids, environment,
descriptors, path, random draw, signal handlers) as JSON to REPORT, then exits or waits."""

from __future__ import annotations

import atexit
import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any


def open_fds() -> list[int]:
    found = []
    for fd in range(3, 1024):
        try:
            os.fstat(fd)
        except OSError:
            continue
        found.append(fd)
    return found


def main() -> None:
    report, actions = Path(sys.argv[1]), sys.argv[2:]
    seen: dict[str, Any] = {
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "sid": os.getsid(0),
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "argv": sys.argv,
        "path": sys.path[:3],
        "fds": open_fds(),
        "stdin": sys.stdin.read(),
        "random": random.random(),
        "sigint_default": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
        "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        "threads": threading.active_count(),
    }
    if "grandchild" in actions:  # a process of the same group, for the group kill
        seen["grandchild"] = subprocess.Popen(["sleep", "300"]).pid
    if "ignore-term" in actions:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    partial = report.with_suffix(".partial")
    partial.write_text(json.dumps(seen))
    partial.replace(report)
    atexit.register(print, "probe: atexit ran")
    print("probe: hello")  # buffered: in the log only if the interpreter ends as usual
    if "exit" in actions:
        sys.exit(int(actions[actions.index("exit") + 1]))
    if "wait" in actions:
        threading.Event().wait()


main()
