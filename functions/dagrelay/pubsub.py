"""The real Pub/Sub publisher behind ``dagrelay.store.outbox.Publisher``."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future

from google.api_core import retry as api_retry
from google.cloud.pubsub_v1 import PublisherClient
from google.cloud.pubsub_v1.types import BatchSettings

from dagrelay.store.outbox import OutgoingMessage


class PubSubPublisher:
    """The real client. Honors ``PUBSUB_EMULATOR_HOST`` by itself; created once per process."""

    def __init__(self, project_id: str, timeout_s: float = 30.0) -> None:
        self.project_id = project_id
        self.timeout_s = timeout_s
        self._client = PublisherClient(batch_settings=BatchSettings(max_latency=0.001))
        self._retry = api_retry.Retry(initial=0.1, maximum=2.0, timeout=timeout_s)

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        """One result per message: a message the client refuses before sending (an attribute
        that is not text, a message too large) fails alone."""
        futures: list[Future[str] | BaseException] = []
        for m in messages:
            try:
                futures.append(
                    self._client.publish(
                        self._client.topic_path(self.project_id, m.topic),
                        m.data(),
                        retry=self._retry,
                        **dict(m.attributes),
                    )
                )
            except Exception as exc:  # noqa: BLE001 - this message's result; the others go on
                futures.append(exc)
        results: list[BaseException | None] = []
        for future in futures:
            if isinstance(future, BaseException):
                results.append(future)
                continue
            try:
                future.result(timeout=self.timeout_s)
                results.append(None)
            except Exception as exc:  # noqa: BLE001 - each failure is reported to the caller
                results.append(exc)
        return results
