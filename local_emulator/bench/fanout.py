"""The local stand-in for Pub/Sub push to a Cloud Run service of K instances with request
concurrency C: the emulator's own push keeps about two requests in flight per subscription
(ARCHITECTURE.md, "Capacity"), which cannot fill K x C request threads. So this pulls from the
subscription (synchronous pull, only as many messages as there are free request slots) and
POSTs each as the push envelope to the least-loaded instance (round robin among equals), at
most C per instance; a 2xx acknowledges, anything else nacks (Pub/Sub redelivers), as push."""

from __future__ import annotations

import base64
import itertools
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests
from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1

PULL_MAX = 500
REQUEST_TIMEOUT_S = 600  # the subscription's ack deadline


@dataclass
class Delivery:
    """What the fan-out saw: requests at once (now and at the peak), outcomes by status."""

    in_flight: int = 0
    peak_in_flight: int = 0
    delivered: int = 0
    statuses: Counter[str] = field(default_factory=Counter)

    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))


class PushFanout:
    def __init__(
        self, subscription: str, endpoints: list[str], concurrency: int, source_path: str
    ) -> None:
        self.subscription = subscription  # projects/<p>/subscriptions/<s>
        self.endpoints = endpoints  # each instance's base URL
        self.per_instance = concurrency
        self.source_path = source_path  # /projects/<p>/topics/<t>: the CloudEvent's source
        self.busy = [0] * len(endpoints)
        self.turn = itertools.count()
        self.stats = Delivery()
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.pool = ThreadPoolExecutor(max_workers=concurrency * len(endpoints))
        self.local = threading.local()
        self.thread = threading.Thread(target=self._pull_forever, name="fanout", daemon=True)

    def start(self) -> PushFanout:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        with self.cond:
            self.cond.notify_all()
        self.thread.join(timeout=15)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.subscriber.close()

    def _capacity(self) -> int:
        return self.per_instance * len(self.endpoints)

    def _pull_forever(self) -> None:
        while not self.stopping.is_set():
            with self.cond:
                while self.stats.in_flight >= self._capacity() and not self.stopping.is_set():
                    self.cond.wait(timeout=0.1)
                free = self._capacity() - self.stats.in_flight
            if self.stopping.is_set():
                return
            try:
                response = self.subscriber.pull(
                    request={
                        "subscription": self.subscription,
                        "max_messages": min(free, PULL_MAX),
                    },
                    timeout=2,
                )
            except (api_exceptions.DeadlineExceeded, api_exceptions.ServiceUnavailable):
                continue
            for received in response.received_messages:
                instance = self._take_slot()
                self.pool.submit(self._deliver, instance, received)

    def _take_slot(self) -> int:
        with self.cond:
            least = min(self.busy)
            start = next(self.turn)
            n = len(self.busy)
            instance = next(i for i in ((start + k) % n for k in range(n)) if self.busy[i] == least)
            self.busy[instance] += 1
            self.stats.in_flight += 1
            self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)
            return instance

    def _deliver(self, instance: int, received: pubsub_v1.types.ReceivedMessage) -> None:
        message = received.message
        body = {
            "message": {
                "data": base64.b64encode(message.data).decode(),
                "attributes": dict(message.attributes),
                "messageId": message.message_id,
            },
            "subscription": self.subscription,
        }
        status = "error"
        try:
            session = self._session()
            response = session.post(
                self.endpoints[instance] + self.source_path,
                json=body,
                timeout=REQUEST_TIMEOUT_S,
                # A fresh connection each time: gunicorn closes an idle kept-alive one after 2 s,
                # and a push that reused it would fail for the benchmark's sake, not the router's.
                headers={"Connection": "close"},
            )
            status = str(response.status_code)
        except requests.RequestException as exc:
            status = type(exc).__name__
        finally:
            # The instance's request slot is free once it answered; the ack is Pub/Sub's.
            with self.cond:
                self.busy[instance] -= 1
                self.stats.in_flight -= 1
                self.stats.delivered += 1
                self.stats.statuses[status] += 1
                self.cond.notify_all()
            self._settle(received.ack_id, ok=status.startswith("2"))

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self.local, "session", None)
        if session is None:
            session = requests.Session()
            self.local.session = session
        return session

    def _settle(self, ack_id: str, *, ok: bool) -> None:
        try:
            if ok:
                self.subscriber.acknowledge(
                    request={"subscription": self.subscription, "ack_ids": [ack_id]}
                )
            else:
                self.subscriber.modify_ack_deadline(
                    request={
                        "subscription": self.subscription,
                        "ack_ids": [ack_id],
                        "ack_deadline_seconds": 0,
                    }
                )
        except api_exceptions.GoogleAPICallError:
            pass  # the message comes again; the engine ignores the duplicate
