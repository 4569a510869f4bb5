"""A pull worker sharing the router's code: ``python -m dagrelay.local worker``.

The local stand-in for many function instances: each worker pulls from the events subscription
and hands every message to the same Router the Cloud Function uses; a message the router fails
is nacked, so Pub/Sub redelivers it (and dead-letters it after the maximum attempts).
"""

from __future__ import annotations

import base64
import logging
import signal
from types import FrameType

from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1

from dagrelay.config import get_settings
from dagrelay.local.crash_router import crash_armed_router

log = logging.getLogger("dagrelay.worker")


class Worker:
    def __init__(self, subscription: str, max_messages: int = 10) -> None:
        settings = get_settings()
        self.router = crash_armed_router()  # the fault tests' crash points, if armed
        self.subscriber = pubsub_v1.SubscriberClient()
        self.path = self.subscriber.subscription_path(settings.project_id, subscription)
        self.source = (
            f"//pubsub.googleapis.com/projects/{settings.project_id}/topics/{settings.events_topic}"
        )
        self.max_messages = max_messages
        self.stopping = False

    def stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        self.stopping = True

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        while not self.stopping:
            self.pull_once()
        self.subscriber.close()

    def pull_once(self) -> int:
        try:
            response = self.subscriber.pull(
                request={"subscription": self.path, "max_messages": self.max_messages},
                timeout=5,
            )
        except (api_exceptions.DeadlineExceeded, api_exceptions.ServiceUnavailable):
            return 0  # nothing arrived in time, or the emulator is restarting: pull again
        for received in response.received_messages:
            self.handle(received)
        return len(response.received_messages)

    def handle(self, received: pubsub_v1.types.ReceivedMessage) -> None:
        message = received.message
        body = {
            "message": {
                "data": base64.b64encode(message.data).decode(),
                "attributes": dict(message.attributes),
                "messageId": message.message_id,
            },
            "subscription": self.path,
        }
        try:
            self.router.handle_push(body, source=self.source)
        except Exception:
            log.exception("router failed; nacking for redelivery")
            self._settle(received.ack_id, ack=False)
            return
        self._settle(received.ack_id, ack=True)

    def _settle(self, ack_id: str, *, ack: bool) -> None:
        try:
            if ack:
                self.subscriber.acknowledge(
                    request={"subscription": self.path, "ack_ids": [ack_id]}
                )
            else:
                self.subscriber.modify_ack_deadline(
                    request={
                        "subscription": self.path,
                        "ack_ids": [ack_id],
                        "ack_deadline_seconds": 0,
                    }
                )
        except api_exceptions.GoogleAPICallError as exc:  # the message will simply come again
            log.warning("could not settle message: %s", exc)
