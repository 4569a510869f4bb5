"""Which database errors count as transient (worth another try of a checked transaction)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, ProgrammingError

from dagrelay.store.db import is_transient, retry_transient


def chained(outer: Exception, cause: BaseException) -> Exception:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (OperationalError("SELECT 1", {}, Exception("server closed the connection")), True),
        (InterfaceError("SELECT 1", {}, Exception("network error")), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (chained(RuntimeError("checkout failed"), ConnectionResetError()), True),
        (ProgrammingError("UPDATE", {}, Exception({"C": "40P01", "M": "deadlock detected"})), True),
        (
            OperationalError("UPDATE", {}, Exception({"C": "40001", "M": "could not serialize"})),
            True,
        ),
        (
            ProgrammingError(
                "SELECT",
                {},
                Exception({"C": "0A000", "M": "cached plan must not change result type"}),
            ),
            True,
        ),
        (ProgrammingError("SELECT", {}, Exception({"C": "0A000", "M": "not supported"})), False),
        (IntegrityError("INSERT", {}, Exception("duplicate key")), False),
        (ProgrammingError("SELEC", {}, Exception("syntax error")), False),
        (ValueError("not a database error"), False),
    ],
)
def test_is_transient(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_retry_transient_retries_then_gives_up() -> None:
    calls: list[int] = []
    pauses: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "done"

    assert retry_transient(flaky, attempts=3, delay_s=0.1, sleep=pauses.append) == "done"
    assert pauses == [0.1, 0.2]

    def always() -> None:
        raise ConnectionResetError("reset")

    with pytest.raises(ConnectionResetError):
        retry_transient(always, attempts=2, delay_s=0, sleep=pauses.append)


def test_retry_transient_does_not_retry_a_real_error() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    with pytest.raises(IntegrityError):
        retry_transient(broken, sleep=lambda _: None)
    assert calls == [1]
