"""The local stack's PostgreSQL database and Pub/Sub topology (topics, push subscription)."""

from __future__ import annotations

import contextlib

from google.api_core.exceptions import AlreadyExists
from google.cloud import pubsub_v1
from google.protobuf import duration_pb2
from sqlalchemy import create_engine, make_url, text

from dagrelay.store import migrate

ACK_DEADLINE_S = 600  # above the longest handler run, or the emulator redelivers concurrently
# The same values as terraform/ gives the real subscription.
RETRY_MIN_BACKOFF_S = 1
RETRY_MAX_BACKOFF_S = 60
MAX_DELIVERY_ATTEMPTS = 5  # Pub/Sub's minimum


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
    # CloudEvent source from it (ARCHITECTURE.md, "Local stack").
    return f"http://127.0.0.1:{router_port}/projects/{project}/topics/{topic}"


def ensure_topic(publisher: pubsub_v1.PublisherClient, project: str, topic: str) -> str:
    path = publisher.topic_path(project, topic)
    with contextlib.suppress(AlreadyExists):
        publisher.create_topic(name=path)
    return path


def ensure_subscription(
    project: str,
    topic: str,
    subscription: str,
    *,
    push_endpoint: str | None = None,
    dead_letter_topic: str | None = None,
) -> str:
    """A subscription with the retry and dead-letter policies Terraform gives the real one
    (pull when no endpoint is given)."""
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    try:
        topic_path = ensure_topic(publisher, project, topic)
        sub_path = subscriber.subscription_path(project, subscription)
        request: dict[str, object] = {
            "name": sub_path,
            "topic": topic_path,
            "ack_deadline_seconds": ACK_DEADLINE_S,
            "retry_policy": {
                "minimum_backoff": duration_pb2.Duration(seconds=RETRY_MIN_BACKOFF_S),
                "maximum_backoff": duration_pb2.Duration(seconds=RETRY_MAX_BACKOFF_S),
            },
        }
        if push_endpoint:
            request["push_config"] = {"push_endpoint": push_endpoint}
        if dead_letter_topic:
            request["dead_letter_policy"] = {
                "dead_letter_topic": ensure_topic(publisher, project, dead_letter_topic),
                "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS,
            }
        with contextlib.suppress(AlreadyExists):
            subscriber.create_subscription(request=request)
        return sub_path
    finally:
        subscriber.close()
