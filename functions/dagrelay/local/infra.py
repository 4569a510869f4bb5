"""The local stack's PostgreSQL database and Pub/Sub topology (topics, push subscription)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from google.api_core.exceptions import AlreadyExists
from google.cloud import pubsub_v1
from google.protobuf import duration_pb2
from sqlalchemy import create_engine, make_url, text

from dagrelay.store import migrate


@dataclass(frozen=True)
class Delivery:
    """A subscription's delivery policy. terraform/pubsub.tf gives the real subscriptions the
    same values (tests/unit/test_terraform.py compares them)."""

    ack_deadline_s: int  # above the longest handler run, or the emulator redelivers concurrently
    retry_min_backoff_s: int
    retry_max_backoff_s: int
    retention_s: int  # how long an unacknowledged message is kept (and so redelivered)
    max_delivery_attempts: int | None  # then the dead-letter topic; None: no dead-letter policy


EVENTS = Delivery(600, 1, 60, 604_800, max_delivery_attempts=5)  # 5: Pub/Sub's minimum
# The router acknowledges every dead letter once it is recorded (or, its last resort, logged),
# so one is redelivered only while the router is down or failing: slower retries and one day's
# retention bound that. No dead-letter policy: a dead letter of a dead letter would help nobody.
DEAD_LETTERS = Delivery(600, 10, 600, 86_400, max_delivery_attempts=None)


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
    path: str = publisher.topic_path(project, topic)
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
    delivery: Delivery = EVENTS,
) -> str:
    """A subscription with the delivery policy Terraform gives the real one (pull when no
    endpoint is given; a dead-letter policy when the delivery has one and a topic is given)."""
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    try:
        topic_path = ensure_topic(publisher, project, topic)
        sub_path: str = subscriber.subscription_path(project, subscription)
        request: dict[str, object] = {
            "name": sub_path,
            "topic": topic_path,
            "ack_deadline_seconds": delivery.ack_deadline_s,
            "message_retention_duration": duration_pb2.Duration(seconds=delivery.retention_s),
            "retry_policy": {
                "minimum_backoff": duration_pb2.Duration(seconds=delivery.retry_min_backoff_s),
                "maximum_backoff": duration_pb2.Duration(seconds=delivery.retry_max_backoff_s),
            },
        }
        if push_endpoint:
            request["push_config"] = {"push_endpoint": push_endpoint}
        if dead_letter_topic and delivery.max_delivery_attempts is not None:
            request["dead_letter_policy"] = {
                "dead_letter_topic": ensure_topic(publisher, project, dead_letter_topic),
                "max_delivery_attempts": delivery.max_delivery_attempts,
            }
        with contextlib.suppress(AlreadyExists):
            subscriber.create_subscription(request=request)
        return sub_path
    finally:
        subscriber.close()
