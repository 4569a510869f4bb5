"""Which spawns the fork server takes (dagrelay/local/forkserver.py): only ``python -m`` a
stack module on this interpreter, and only when the start-up environment is the zygote's."""

from __future__ import annotations

import sys

import pytest

from dagrelay.local.forkserver import entry_module, startup_env

PY = sys.executable


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        ([PY, "-m", "functions_framework", "--target", "router"], "functions_framework"),
        ([PY, "-m", "dagrelay.local", "worker", "--subscription", "s"], "dagrelay.local"),
        ([PY, "-m", "bqemulator", "--port=1"], None),  # not a stack module
        (["/usr/bin/python3", "-m", "functions_framework"], None),  # another interpreter
        ([PY, "-c", "import functions_framework"], None),
        ([PY, "functions_framework"], None),
        (["/usr/lib/google-cloud-sdk/bin/cloud-pubsub-emulator", "--port=1"], None),
        ([PY, "-m"], None),
        ([], None),
    ],
)
def test_entry_module(argv: list[str], module: str | None) -> None:
    assert entry_module(argv) == module


def test_startup_env_keeps_what_is_read_once_per_process() -> None:
    env = {
        "PYTHONHASHSEED": "1",
        "PYTHONPATH": "/team",  # the child puts it on sys.path itself
        "PYTHONUNBUFFERED": "1",  # the child builds its stdio itself
        "GRPC_VERBOSITY": "debug",
        "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
        "YARL_NO_EXTENSIONS": "1",
        "LC_ALL": "C",
        "DATABASE_URL": "postgresql+pg8000://x",
        "PUBSUB_EMULATOR_HOST": "127.0.0.1:1",
        "DAGRELAY_EVENTS_TOPIC": "t",
    }
    assert startup_env(env) == {
        "PYTHONHASHSEED": "1",
        "GRPC_VERBOSITY": "debug",
        "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
        "YARL_NO_EXTENSIONS": "1",
        "LC_ALL": "C",
    }
