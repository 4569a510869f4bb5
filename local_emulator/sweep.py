"""The local stand-in for Cloud Scheduler's sweep job: publishes ``{"action": "sweep"}`` to the
events topic every few seconds, as the scheduler does every minute in GCP."""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING

from google.api_core.exceptions import GoogleAPICallError
from google.cloud import pubsub_v1

if TYPE_CHECKING:
    from local_emulator.stack import StackConfig

log = logging.getLogger(__name__)


class SweepLoop:
    def __init__(self, config: StackConfig, interval_s: float) -> None:
        self.interval_s = interval_s
        self.message = json.dumps(
            {"action": "sweep", "older_than_s": config.sweep_older_than_s}
        ).encode()
        self.client = pubsub_v1.PublisherClient()
        self.topic = self.client.topic_path(config.project_id, config.events_topic)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweep-loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):  # a timer, as the scheduler's cron is
            try:
                self.client.publish(self.topic, self.message, action="sweep").result(timeout=10)
            except (GoogleAPICallError, TimeoutError) as exc:  # e.g. the emulator restarting
                log.warning("sweep not published: %s", exc)
