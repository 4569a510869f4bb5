from __future__ import annotations

from google.cloud import pubsub_v1
from sqlalchemy import Engine, text


def test_db_fixture_is_migrated(db: Engine) -> None:
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tasks")).scalar_one() == 0


def test_emulator_fixture_accepts_topics(pubsub_emulator: str, unique: str) -> None:
    client = pubsub_v1.PublisherClient()
    path = client.topic_path("dagrelay-test", f"t-{unique}")
    client.create_topic(name=path)
    assert path in [t.name for t in client.list_topics(project="projects/dagrelay-test")]
