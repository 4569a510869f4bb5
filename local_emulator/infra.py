"""The local stack's PostgreSQL database and Pub/Sub topology (topics, push subscription)."""

from __future__ import annotations

import contextlib

from google.api_core.exceptions import AlreadyExists
from google.cloud import pubsub_v1
from google.protobuf import duration_pb2
from sqlalchemy import create_engine, make_url, text

from dagrelay import migrate

ACK_DEADLINE_S = 600  # above the longest handler run, or the emulator redelivers concurrently


def ensure_database(url: str) -> bool:
    """Create the URL's database if it does not exist (True if created)."""
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
            ).first()
            if exists:
                return False
            conn.execute(text(f'CREATE DATABASE "{target.database}"'))
            return True
    finally:
        admin.dispose()


def upgrade_database(url: str) -> None:
    engine = create_engine(url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


def push_endpoint(router_port: int, project: str, topic: str) -> str:
    # The path must contain /projects/<p>/topics/<t>: functions-framework derives the
    # CloudEvent source from it (LOCAL-STACK-NOTES.md).
    return f"http://127.0.0.1:{router_port}/projects/{project}/topics/{topic}"


def ensure_topic(publisher: pubsub_v1.PublisherClient, project: str, topic: str) -> str:
    path = publisher.topic_path(project, topic)
    with contextlib.suppress(AlreadyExists):
        publisher.create_topic(name=path)
    return path


def ensure_push_subscription(project: str, topic: str, subscription: str, endpoint: str) -> str:
    """Topic + push subscription with the retry policy Terraform gives the real one."""
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    try:
        topic_path = ensure_topic(publisher, project, topic)
        sub_path = subscriber.subscription_path(project, subscription)
        request = {
            "name": sub_path,
            "topic": topic_path,
            "push_config": {"push_endpoint": endpoint},
            "ack_deadline_seconds": ACK_DEADLINE_S,
            "retry_policy": {
                "minimum_backoff": duration_pb2.Duration(seconds=1),
                "maximum_backoff": duration_pb2.Duration(seconds=60),
            },
        }
        try:
            subscriber.create_subscription(request=request)
        except AlreadyExists:
            subscriber.modify_push_config(
                subscription=sub_path, push_config={"push_endpoint": endpoint}
            )
        return sub_path
    finally:
        subscriber.close()
