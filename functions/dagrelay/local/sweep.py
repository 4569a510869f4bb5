"""The local stand-in for Cloud Scheduler's sweep job: publishes ``{"action": "sweep"}`` to the
events topic every few seconds, as the scheduler does every minute in GCP."""

from __future__ import annotations

import json
import logging
import threading

from google.api_core.exceptions import GoogleAPICallError
from google.cloud import pubsub_v1

from dagrelay.states import Action

log = logging.getLogger(__name__)


class SweepLoop:
    """Publishes a sweep to ``project_id``'s ``topic`` every ``interval_s`` seconds."""

    def __init__(
        self, project_id: str, topic: str, *, interval_s: float, older_than_s: int
    ) -> None:
        self.interval_s = interval_s
        self.message = json.dumps({"action": Action.SWEEP, "older_than_s": older_than_s}).encode()
        self.client = pubsub_v1.PublisherClient()
        self.topic = self.client.topic_path(project_id, topic)
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
                self.client.publish(self.topic, self.message, action=Action.SWEEP).result(
                    timeout=10
                )
            except (GoogleAPICallError, TimeoutError) as exc:  # e.g. the emulator restarting
                log.warning("sweep not published: %s", exc)
