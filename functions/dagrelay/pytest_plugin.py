"""The pytest plugin of ``dagrelay.testing`` (registered as the ``pytest11`` entry point
``dagrelay``, so installing dagrelay is enough): the fixture ``dagrelay_runner``, a
``PipelineRunner`` on the session's database, emptied before each test.

The migrations run once per server, not per session: the template ``dagrelay_testing_tpl_<head>_
<digest>`` is built by the first session that needs it (under an advisory lock) and kept; each
session copies it into a database of its own (one per xdist worker too), dropped at the end.
The server is ``DAGRELAY_TEST_ADMIN_URL`` (default: the local PostgreSQL as postgres).
Options: ``--dagrelay-seed N`` (the runner's seed for shuffled delivery)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from dagrelay.testing import PipelineRunner, SessionDatabase

ADMIN_ENV = "DAGRELAY_TEST_ADMIN_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--dagrelay-seed", type=int, default=0, help="dagrelay_runner: seed of shuffled delivery"
    )


def _admin_url() -> str:
    from dagrelay import testing  # noqa: PLC0415 - load the engine only when a test asks

    return os.environ.get(ADMIN_ENV, testing.ADMIN_URL)


@pytest.fixture(scope="session")
def dagrelay_template_db() -> str:
    """The name of the migrated template that each session's database copies."""
    from dagrelay import testing  # noqa: PLC0415 - see _admin_url

    return testing.template_database(_admin_url())


@pytest.fixture(scope="session")
def dagrelay_database(dagrelay_template_db: str) -> Iterator[SessionDatabase]:
    """The session's database (a copy of the template, dropped at the end) and its engine."""
    from dagrelay import testing  # noqa: PLC0415 - see _admin_url

    with testing.temporary_database(_admin_url(), template=dagrelay_template_db) as url:
        database = testing.SessionDatabase(url)
        try:
            yield database
        finally:
            database.close()


@pytest.fixture
def dagrelay_runner(
    dagrelay_database: SessionDatabase, request: pytest.FixtureRequest
) -> Iterator[PipelineRunner]:
    """A ``dagrelay.testing.PipelineRunner`` on the session's database, as migrated: every
    row an earlier test wrote is gone and the sequences start again."""
    from dagrelay import testing  # noqa: PLC0415 - see _admin_url

    dagrelay_database.reset()
    runner = testing.PipelineRunner(
        dagrelay_database.engine, seed=request.config.getoption("--dagrelay-seed")
    )
    try:
        yield runner
    finally:
        runner.close()
