"""The dashboard's fuzz target: hostile requests from a fixed seed (``dashboard_hostile``) sent
in-process to the status and operate functions. None may answer 5xx, and every request is
accounted for in a table (category, sent, outcomes) printed with ``-s`` and saved to
test-artifacts/. ``DAGRELAY_FUZZ_REQUESTS`` (default 240) and ``DAGRELAY_FUZZ_SEED`` make the
longer profile outside CI."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.messages import StartBatch
from dagrelay.store.outbox import InMemoryPublisher
from tests.integration import dashboard_hostile as hostile
from tests.integration.helpers import drive
from tests.integration.test_dashboard_limits import (  # the same clients and fake publisher
    TOKEN,
    operate,  # noqa: F401 - a fixture
    sent,  # noqa: F401 - a fixture
    status,  # noqa: F401 - a fixture
)

pytestmark = pytest.mark.integration

COUNT = int(os.environ.get("DAGRELAY_FUZZ_REQUESTS", "240"))
SEED = int(os.environ.get("DAGRELAY_FUZZ_SEED", "21"))
ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard_fuzz.txt"


@pytest.fixture
def pipeline(
    insert_pipeline: Callable[..., dict[str, int]],
    engine: DagEngine,
    publisher: InMemoryPublisher,
) -> None:
    insert_pipeline("ops", {"first": [], "second": ["first"]}, handlers={"second": "python.fail"})
    engine.start_batch(StartBatch("ops", "b1"))
    drive(engine, publisher)


def send(client: FlaskClient, request: hostile.Request) -> int:
    client.set_cookie("dagrelay_csrf", TOKEN)
    response = client.open(
        request.path,
        method=request.method,
        data=request.body,
        content_type=request.content_type,
        headers=request.headers,
    )
    return response.status_code


def table(outcomes: dict[str, Counter[str]]) -> str:
    lines = [f"dashboard fuzz: seed {SEED}, {COUNT} requests", f"{'category':<22} sent  outcomes"]
    for category, counts in sorted(outcomes.items()):
        shown = ", ".join(f"{outcome}: {n}" for outcome, n in sorted(counts.items()))
        lines.append(f"{category:<22} {sum(counts.values()):>4}  {shown}")
    total = sum(sum(c.values()) for c in outcomes.values())
    lines.append(f"{'total':<22} {total:>4}")
    return "\n".join(lines)


@pytest.mark.usefixtures("pipeline")
def test_no_request_is_answered_5xx_and_every_one_is_counted(
    operate: FlaskClient,  # noqa: F811 - the fixture
    status: FlaskClient,  # noqa: F811 - the fixture
    sent: InMemoryPublisher,  # noqa: F811 - the fixture
) -> None:
    clients = {"operate": operate, "status": status}
    requests = hostile.requests(SEED, COUNT)
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    server_errors = []
    for request in requests:
        before = len(sent.sent)
        code = send(clients[request.function], request)
        published = len(sent.sent) - before
        outcomes[request.category][
            f"{code}" + (f"+{published} published" if published else "")
        ] += 1
        if code >= 500:
            server_errors.append((request.category, request.method, request.path[:80], code))
        # accounted for: an action answered 200 published its messages, anything else none
        is_action = request.method == "POST" and request.path.startswith("/actions/")
        assert (published > 0) == (code == 200 and is_action), (request.category, code)
    report = table(outcomes)
    print("\n" + report)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(report + "\n", encoding="utf-8")

    assert sum(sum(c.values()) for c in outcomes.values()) == len(requests) == COUNT
    assert server_errors == []
    assert len(outcomes) == len(hostile.CATEGORIES)  # every category was sent
    assert set(outcomes["valid trigger"]) == {"200+1 published"}, outcomes["valid trigger"]
