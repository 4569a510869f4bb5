"""The pytest plugin of ``dagrelay.testing`` (registered as the ``pytest11`` entry point
``dagrelay``, so installing dagrelay is enough): the fixture ``dagrelay_runner``, a
``PipelineRunner`` on a database of its own, cloned from a migrated template made once per
session. The server is ``DAGRELAY_TEST_ADMIN_URL`` (default: the local PostgreSQL as postgres).
Options: ``--dagrelay-seed N`` (the runner's seed for shuffled delivery)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from dagrelay.testing import PipelineRunner

ADMIN_ENV = "DAGRELAY_TEST_ADMIN_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--dagrelay-seed", type=int, default=0, help="dagrelay_runner: seed of shuffled delivery"
    )


def _admin_url() -> str:
    from dagrelay import testing  # noqa: PLC0415 - load the engine only when a test asks

    return os.environ.get(ADMIN_ENV, testing.ADMIN_URL)


@pytest.fixture(scope="session")
def dagrelay_template_db() -> Iterator[str]:
    """The name of a migrated database that each test's database copies."""
    from dagrelay import testing  # noqa: PLC0415 - see _admin_url

    with testing.temporary_database(_admin_url()) as url:
        name = url.rsplit("/", 1)[-1].split("?")[0]
        yield name


@pytest.fixture
def dagrelay_runner(
    dagrelay_template_db: str, request: pytest.FixtureRequest
) -> Iterator[PipelineRunner]:
    """A ``dagrelay.testing.PipelineRunner`` on a fresh database (dropped afterwards)."""
    from dagrelay import testing  # noqa: PLC0415 - see _admin_url

    seed = request.config.getoption("--dagrelay-seed")
    with testing.temporary_database(_admin_url(), template=dagrelay_template_db) as url:
        runner = testing.PipelineRunner(url, seed=seed)
        try:
            yield runner
        finally:
            runner.close()
