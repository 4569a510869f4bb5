"""What every tier shares, and nothing heavy: the Hypothesis profiles, the fake clock, unique
names, the test engine's settings.

The fixtures of services (PostgreSQL databases, the Pub/Sub emulator, the local BigQuery and
GCS) live in ``tests/db_fixtures.py``, ``tests/pubsub_fixtures.py``, ``tests/bq_fixtures.py`` and
``tests/gcs_fixtures.py``; ``tests/integration/conftest.py`` and ``tests/e2e/conftest.py`` load
them, so ``tests/unit`` never imports a database driver's fixtures or a Google client.

Hypothesis profiles (``HYPOTHESIS_PROFILE`` picks one; CI=true picks ``ci``, else ``dev``). A
profile's ``max_examples`` is what a pure, cheap property gets; a property that pays for a
database round trip per step takes a third of it (tests/integration/test_versions_property.py).

- ``dev``: 25 examples, derandomized: a developer's run costs seconds and is the same each time.
- ``ci``: 300 examples, derandomized: the message fuzzers' 300 and the versions model's 100, the
  counts they were written and tuned with.
- ``soak``: 3,000 examples and a fresh random seed each run, to look for new counterexamples;
  each one it finds becomes a plain regression test.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import settings

from dagrelay.config import Settings

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

settings.register_profile("dev", max_examples=25, derandomize=True, deadline=None)
settings.register_profile("ci", max_examples=300, derandomize=True, deadline=None)
settings.register_profile("soak", max_examples=3000, derandomize=False, deadline=None)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
settings.load_profile(PROFILE)

# The tests' python.call callables live in tests/: allow them as a deployment allows its own
# modules (in the environment, so a local stack's router started by a test inherits it), beside
# the defaults (a team project's packages, the example pipeline's callable).
os.environ.setdefault(
    "DAGRELAY_CALL_ALLOWED_PREFIXES", "tests,handlers,pipelines,dagrelay.examples"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules marked ``long_pole(seconds)`` first, longest first; then the others, largest
    first; each module's tests in their own order. pytest-xdist's ``--dist loadscope
    --no-loadscope-reorder`` (Makefile) hands modules to the workers in this order, so no worker
    starts a module of a minute when the others are done."""
    module = {item: item.nodeid.split("::", 1)[0] for item in items}
    size = Counter(module.values())
    first = {name: index for index, name in reversed(list(enumerate(module.values())))}
    seconds: dict[str, float] = {}
    for item in items:
        marker = item.get_closest_marker("long_pole")
        if marker is not None:
            seconds[module[item]] = float(marker.args[0])
    items.sort(
        key=lambda item: (-seconds.get(module[item], 0), -size[module[item]], first[module[item]])
    )


class FakeClock:
    """An injectable clock: starts at a fixed instant, moves only when told to."""

    def __init__(self, start: datetime = datetime(2024, 3, 1, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, subscription and pipeline names."""
    return uuid.uuid4().hex[:8]


def engine_settings() -> Settings:
    """The settings every test engine is built with (the default topics)."""
    return Settings(
        worker_id="test",
        handler_modules=[],
        events_topic="dagrelay-events",
        alerts_topic="dagrelay-alerts",
    )
