"""Which database connection the configuration selects (no network: the Cloud SQL connector is
replaced by a fake that records how it was called)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from dagrelay.config import Settings
from dagrelay.errors import ConfigError
from dagrelay.store import db


class FakeConnector:
    instances: ClassVar[list[FakeConnector]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        FakeConnector.instances.append(self)

    def connect(self, *args: Any, **kwargs: Any) -> object:
        self.calls.append((args, kwargs))
        raise ConnectionRefusedError("fake connector: no Cloud SQL here")


@pytest.fixture
def fake_connector(monkeypatch: pytest.MonkeyPatch) -> type[FakeConnector]:
    import google.cloud.sql.connector as connector_module  # noqa: PLC0415

    FakeConnector.instances = []
    monkeypatch.setattr(connector_module, "Connector", FakeConnector)
    return FakeConnector


def test_a_url_selects_a_plain_engine_with_a_small_pool() -> None:
    settings = Settings(database_url="postgresql+pg8000://u@127.0.0.1:5432/d", db_pool_size=3)
    engine = db.create_db_engine(settings)
    assert engine.url.render_as_string() == "postgresql+pg8000://u@127.0.0.1:5432/d"
    assert engine.pool.size() == 3  # type: ignore[attr-defined]
    engine.dispose()


def test_cloud_sql_uses_the_connector_with_pg8000_lazy_refresh_and_private_ip(
    fake_connector: type[FakeConnector],
) -> None:
    settings = Settings(
        database_url=None,
        cloud_sql_instance="proj:europe-west1:dagrelay",
        db_user="dagrelay",
        db_name="dagrelay",
        db_password="s3cret",  # noqa: S106 - a fake
        db_pool_size=2,
    )
    engine = db.create_db_engine(settings)

    (connector,) = fake_connector.instances
    assert connector.kwargs == {"refresh_strategy": "lazy", "ip_type": "private"}
    assert engine.pool.size() == 2  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="no Cloud SQL here"):
        engine.connect()
    (args, kwargs) = connector.calls[0]
    assert args == ("proj:europe-west1:dagrelay", "pg8000")
    assert kwargs == {"user": "dagrelay", "password": "s3cret", "db": "dagrelay"}
    engine.dispose()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (Settings(database_url=None), "set DATABASE_URL"),
        (
            Settings(database_url=None, cloud_sql_instance="p:r:i"),
            "DAGRELAY_DB_PASSWORD is required",
        ),
    ],
)
def test_missing_connection_settings_are_named(settings: Settings, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        db.create_db_engine(settings)
