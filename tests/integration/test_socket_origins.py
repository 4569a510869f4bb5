"""A socket garbage-collected unclosed fails a later test; tests/socket_origins.py makes that
failure name the test that opened it, and where."""

from __future__ import annotations

import gc
import os
import socket
import sys
import warnings

import pytest

from tests.socket_origins import SocketOrigins

pytestmark = pytest.mark.integration


def _leak(address: tuple[str, int]) -> None:
    """A connection dropped unclosed inside a reference cycle, as a forgotten pool is."""
    cycle: list[object] = [socket.create_connection(address)]
    cycle.append(cycle)


def test_a_socket_collected_unclosed_names_the_test_that_opened_it(
    socket_origins: SocketOrigins,
) -> None:
    seen: list[BaseException | None] = []
    previous = sys.unraisablehook
    with socket.create_server(("127.0.0.1", 0)) as server:
        _leak(server.getsockname())
        sys.unraisablehook = socket_origins.unraisable_hook(lambda u: seen.append(u.exc_value))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", ResourceWarning)
                gc.collect()
        finally:
            sys.unraisablehook = previous

    [error] = [e for e in seen if isinstance(e, ResourceWarning)]
    assert "unclosed <socket.socket" in str(error)
    origin = error.__notes__[0].splitlines()
    assert origin[0] == f"this socket was opened during {os.environ['PYTEST_CURRENT_TEST']}"
    assert origin[1].startswith("  tests/integration/test_socket_origins.py:")
    assert origin[1].endswith(" in _leak")
    assert origin[2].endswith(" in test_a_socket_collected_unclosed_names_the_test_that_opened_it")


def test_a_socket_it_did_not_see_opened_gets_no_note(socket_origins: SocketOrigins) -> None:
    with socket.socket() as unseen:
        unseen.bind(("127.0.0.1", 0))
        assert socket_origins.origin(unseen) is None
