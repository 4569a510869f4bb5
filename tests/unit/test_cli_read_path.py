"""The CLI's light read path (issue 19): which URLs it reads with pg8000 alone, and the database
URL found without pydantic-settings, as the whole settings would find it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dagrelay.config import database_url, get_settings, load_settings
from dagrelay.store.direct import connect_args


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+pg8000://postgres@127.0.0.1:5432/db1",
            {"user": "postgres", "host": "127.0.0.1", "port": 5432, "database": "db1"},
        ),
        (
            "postgresql+pg8000://u%40x:p%2Fw@db.example/d%20b",
            {
                "user": "u@x",
                "password": "p/w",
                "host": "db.example",
                "port": 5432,
                "database": "d b",
            },
        ),
        ("postgresql+pg8000://u@[::1]:6543", {"user": "u", "host": "::1", "port": 6543}),
        ("postgresql+pg8000://u@h/db?ssl_context=true", None),  # options: SQLAlchemy's path
        ("postgresql+psycopg://u@h/db", None),
        ("postgresql+pg8000:///db", None),  # no user
        ("", None),
        (None, None),
    ],
)
def test_connect_args(url: str | None, expected: dict[str, Any] | None) -> None:
    assert connect_args(url) == expected


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"DATABASE_URL": "postgresql+pg8000://a@h/x"},
        {
            "DAGRELAY_DATABASE_URL": "postgresql+pg8000://b@h/y",
            "DATABASE_URL": "postgresql+pg8000://a@h/x",
        },
        {"DAGRELAY_DATABASE_URL": "", "DATABASE_URL": "postgresql+pg8000://a@h/x"},
        {"database_url": "postgresql+pg8000://c@h/z"},
    ],
)
def test_database_url_reads_as_the_settings_do(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no dagrelay.yaml
    for name in ("DAGRELAY_CONFIG", "DAGRELAY_DATABASE_URL", "DATABASE_URL", "database_url"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert database_url() == load_settings().database_url


def test_database_url_from_a_configuration_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("DAGRELAY_CONFIG", "DAGRELAY_DATABASE_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "dagrelay.yaml").write_text("database_url: postgresql+pg8000://f@h/file\n")
    get_settings.cache_clear()
    try:
        assert database_url() == "postgresql+pg8000://f@h/file"
    finally:
        get_settings.cache_clear()
