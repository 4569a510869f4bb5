"""``dagrelay signal KEY``: publishes the signal message the router takes (checked first), with
an id of its own so a repeated publish counts once; bad input exits 2 with the reason."""

from __future__ import annotations

import base64
import getpass
import json

import pytest
from google.cloud import pubsub_v1

from dagrelay.messages import Envelope, Signal, parse
from tests.integration.test_cli import Run, pull_one, run  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration


def test_signal_publishes_a_signal_message(run: Run, pubsub_emulator: str, unique: str) -> None:  # noqa: F811 - the fixture
    project, topic_id = "dagrelay-test", f"events-{unique}"
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.create_topic(name=publisher.topic_path(project, topic_id)).name
    with pubsub_v1.SubscriberClient() as subscriber:
        subscription = subscriber.subscription_path(project, f"sig-{unique}")
        subscriber.create_subscription(name=subscription, topic=topic)

    result = run(
        "signal",
        "crm.export.2024-03",
        "--payload",
        '{"rows": 3}',
        DAGRELAY_PROJECT_ID=project,
        DAGRELAY_EVENTS_TOPIC=topic_id,
    )

    assert result.exit_code == 0, result.output
    message = pull_one(subscription)
    assert (
        result.stdout == f"published signal crm.export.2024-03 (message id {message.message_id})\n"
    )
    body = json.loads(message.data)
    assert body.pop("signal_id")  # its own id: a repeated publish counts once
    assert body == {
        "action": "signal",
        "key": "crm.export.2024-03",
        "payload": {"rows": 3},
        "triggered_by": f"cli:{getpass.getuser()}",
    }
    parsed = parse(Envelope(base64.b64encode(message.data).decode(), {}, "m"))
    assert isinstance(parsed, Signal)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["has space"], "error: signal: key: 'has space' does not match"),
        (["k", "--payload", "[1]"], "error: --payload must be a JSON object, not list"),
        (["k", "--payload", "{"], "error: --payload is not JSON"),
    ],
)
def test_signal_refuses_bad_input_with_exit_2(run: Run, args: list[str], said: str) -> None:  # noqa: F811 - the fixture
    result = run("signal", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(said)
