"""Which test opened a socket that is garbage-collected unclosed (the integration tier's
``socket_origins`` fixture, tests/integration/conftest.py).

A connection dropped without being closed (a pool forgotten undisposed, a connection lost on an
exception path) is usually part of a reference cycle, so its socket is finalised when the garbage
collector next runs: during some later, unrelated test, which pytest then fails with
``ResourceWarning: unclosed <socket.socket ...>`` (``filterwarnings = error``, pyproject.toml).
For each socket this process opens with ``socket.create_connection`` (pg8000 opens every
PostgreSQL connection so, http.client every HTTP one) this remembers the test that opened it and
the frames of our own code that did; the failure then carries them as a note. The price is a walk
up the stack per connection opened, not a garbage collection per test."""

from __future__ import annotations

import gc
import os
import socket
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
OWN_CODE = tuple(str(ROOT / folder) + os.sep for folder in ("functions", "tests", "local_emulator"))
FRAMES = 8  # the innermost frames of our own code kept per socket
REMEMBERED = 4096  # sockets remembered at most, the oldest forgotten first

UnraisableHook = Callable[["sys.UnraisableHookArgs"], object]


def own_frames(frame: FrameType | None) -> list[str]:
    """``path:line in function`` of the innermost frames of this repository's code."""
    found: list[str] = []
    while frame is not None and len(found) < FRAMES:
        path = frame.f_code.co_filename
        if path.startswith(OWN_CODE) and path != __file__:
            found.append(
                f"{os.path.relpath(path, ROOT)}:{frame.f_lineno} in {frame.f_code.co_name}"
            )
        frame = frame.f_back
    return found


class SocketOrigins:
    """Where each open socket came from, keyed by the socket's id and checked by its local
    address (an id is reused once its socket is gone)."""

    def __init__(self) -> None:
        self._origins: OrderedDict[int, tuple[Any, str]] = OrderedDict()

    def opened(self, sock: socket.socket, frame: FrameType | None) -> None:
        test = os.environ.get("PYTEST_CURRENT_TEST", "no test (collection or session set-up)")
        lines = [f"this socket was opened during {test}", *(f"  {x}" for x in own_frames(frame))]
        self._origins[id(sock)] = (sock.getsockname(), "\n".join(lines))
        self._origins.move_to_end(id(sock))
        if len(self._origins) > REMEMBERED:
            self._origins.popitem(last=False)

    def origin(self, sock: socket.socket) -> str | None:
        found = self._origins.get(id(sock))
        if found is None:
            return None
        address, text = found
        try:
            return text if sock.getsockname() == address else None
        except OSError:
            return None

    def create_connection(
        self, create: Callable[..., socket.socket]
    ) -> Callable[..., socket.socket]:
        def create_connection(*args: Any, **kwargs: Any) -> socket.socket:
            sock = create(*args, **kwargs)
            self.opened(sock, sys._getframe(1))
            return sock

        return create_connection

    def unraisable_hook(self, previous: UnraisableHook) -> UnraisableHook:
        """``previous`` (pytest's), after noting where an unclosed socket was opened."""

        def hook(unraisable: sys.UnraisableHookArgs) -> object:
            sock, error = unraisable.object, unraisable.exc_value
            if isinstance(sock, socket.socket) and isinstance(error, ResourceWarning):
                text = self.origin(sock)
                if text is not None:
                    error.add_note(text)
            return previous(unraisable)

        return hook

    @contextmanager
    def installed(self) -> Iterator[SocketOrigins]:
        create, hook = socket.create_connection, sys.unraisablehook
        socket.create_connection = self.create_connection(create)
        sys.unraisablehook = self.unraisable_hook(hook)
        try:
            yield self
        finally:
            socket.create_connection, sys.unraisablehook = create, hook


@pytest.fixture(scope="session", autouse=True)
def socket_origins() -> Iterator[SocketOrigins]:
    """Installed for the whole session (the first fixture set up, so the session's own
    databases are covered); one last collection at the end, so that a socket the last tests
    left is named too."""
    with SocketOrigins().installed() as origins:
        yield origins
        gc.collect()
