"""BigQuery plumbing shared by the ``bigquery.*`` handlers: the client (one per process),
deterministic job ids, submit-once, waiting, the translation of BigQuery errors into
retryable or non-retryable ones, and typed query parameters.

A job's id is derived from (pipeline, batch, task, attempt), so a redelivered ``run_task`` for
the same attempt finds the job the first delivery started instead of starting a second one.
``submit_once`` looks the id up before inserting (BigQuery answers a duplicate insert with 409
Conflict, which is handled too, but not every BigQuery-compatible server does).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from functools import cache
from typing import Any, TypeVar

from google.api_core.client_options import ClientOptions
from google.api_core.exceptions import Conflict, GoogleAPICallError, NotFound
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_RETRY

from dagrelay.config import Settings, get_settings
from dagrelay.errors import DagrelayError, NonRetryableError

Job = bigquery.QueryJob | bigquery.LoadJob
J = TypeVar("J", bound=Job)

MAX_JOB_ID = 1024
REQUEST_TIMEOUT_S = 30.0  # one HTTP request; retries of it are bounded by api_retry()
# errorResult reasons that another attempt cannot fix; any other reason may be transient.
# https://cloud.google.com/bigquery/docs/error-messages
NON_RETRYABLE_REASONS = frozenset(
    {
        "accessDenied",
        "billingNotEnabled",
        "billingTierLimitExceeded",
        "duplicate",
        "invalid",
        "invalidQuery",
        "notFound",
        "notImplemented",
        "resourcesExceeded",
        "responseTooLarge",
    }
)


class BigQueryError(DagrelayError):
    """A BigQuery failure that another attempt may get past (backend error, rate limit)."""


def make_client(settings: Settings) -> bigquery.Client:
    """A client for ``settings``: the configured endpoint without credentials when one is set,
    else Google's endpoint with the environment's credentials."""
    project = settings.bigquery_project or settings.project_id
    if settings.bigquery_endpoint:
        return bigquery.Client(
            project=project,
            location=settings.bigquery_location,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options=ClientOptions(api_endpoint=settings.bigquery_endpoint),
        )
    return bigquery.Client(project=project, location=settings.bigquery_location)


@cache
def client() -> bigquery.Client:
    """The process-wide client, created on first use."""
    return make_client(get_settings())


def api_retry() -> Retry:
    """BigQuery's own retry predicate, bounded by ``bigquery_retry_deadline_s`` (the library's
    default would retry a failing server for 600 s)."""
    return DEFAULT_RETRY.with_timeout(get_settings().bigquery_retry_deadline_s)


def job_id(pipeline: str, batch_id: str, task: str, attempt: int, run_id: int = 0) -> str:
    """``dagrelay_<pipeline>_<batch>_<task>_<attempt>_<hash>``: readable in the console, only
    ``[A-Za-z0-9_-]``, at most 1024 characters; the hash of the exact ids (with the run, so a
    rerun's attempt 1 is a new job) keeps two attempts apart when sanitising or truncating
    would make their names equal."""
    exact = "\x00".join((pipeline, batch_id, task, str(attempt), str(run_id)))
    digest = hashlib.sha256(exact.encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", f"dagrelay_{pipeline}_{batch_id}_{task}_{attempt}")
    return f"{readable[: MAX_JOB_ID - len(digest) - 1]}_{digest}"


@contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """Re-raise a Google API error as NonRetryableError or BigQueryError, naming ``what``."""
    try:
        yield
    except GoogleAPICallError as exc:
        reasons = {str(e.get("reason")) for e in exc.errors if isinstance(e, Mapping)}
        final = bool(reasons & NON_RETRYABLE_REASONS) or (not reasons and exc.code in {400, 404})
        error = NonRetryableError if final else BigQueryError
        raise error(f"{what}: {exc.message}") from exc


def find_job(client: bigquery.Client, job_id: str, location: str | None) -> Job | None:
    with translated_errors(f"BigQuery job {job_id}"):
        try:
            job = client.get_job(
                job_id, location=location, retry=api_retry(), timeout=REQUEST_TIMEOUT_S
            )
        except NotFound:
            return None
    if not isinstance(job, bigquery.QueryJob | bigquery.LoadJob):
        raise NonRetryableError(f"BigQuery job {job_id} is a {type(job).__name__}")
    return job


def submit_once(
    client: bigquery.Client, job_id: str, location: str | None, create: Callable[[], J]
) -> Job:
    """The job ``job_id``: the one an earlier delivery of this attempt started, or a new one
    made by ``create``."""
    existing = find_job(client, job_id, location)
    if existing is not None:
        return existing
    with translated_errors(f"BigQuery job {job_id}"):
        try:
            return create()
        except Conflict:
            pass
    raced = find_job(client, job_id, location)  # started by a concurrent duplicate
    if raced is None:
        raise BigQueryError(f"BigQuery job {job_id} exists but cannot be read")
    return raced


def wait(job: Job, wait_s: float) -> bool:
    """Reload ``job`` until it is DONE or ``wait_s`` has passed; whether it is DONE."""
    deadline = time.monotonic() + wait_s
    while True:
        if job.state == "DONE":
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(1.0, remaining))
        with translated_errors(f"BigQuery job {job.job_id}"):
            job.reload(retry=api_retry(), timeout=REQUEST_TIMEOUT_S)


def raise_if_failed(job: Job) -> None:
    """A DONE job with an errorResult: NonRetryableError when no retry can help, else
    BigQueryError."""
    error: Mapping[str, Any] | None = job.error_result
    if not error:
        return
    reason = str(error.get("reason", "unknown"))
    kind = NonRetryableError if reason in NON_RETRYABLE_REASONS else BigQueryError
    raise kind(f"BigQuery job {job.job_id} failed ({reason}): {error.get('message', '')}")


# Python type -> BigQuery type, most specific first (a bool is an int, a datetime is a date).
_SCALAR_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "BOOL"),
    (int, "INT64"),
    (float, "FLOAT64"),
    (Decimal, "NUMERIC"),
    (str, "STRING"),
    (bytes, "BYTES"),
    (dt.datetime, "TIMESTAMP"),
    (dt.date, "DATE"),
    (dt.time, "TIME"),
    (type(None), "STRING"),
)


def parameter(
    name: str, value: Any
) -> bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter:
    """A typed query parameter: from the Python type (a list is an ARRAY of one type), or
    ``{"type": "DATE", "value": "2024-03-01"}`` to name the type."""
    if isinstance(value, Mapping):
        if set(value) != {"type", "value"}:
            raise NonRetryableError(f"query parameter {name}: use {{type: ..., value: ...}}")
        return bigquery.ScalarQueryParameter(name, str(value["type"]).upper(), value["value"])
    if isinstance(value, list | tuple):
        types = {scalar_type(name, v) for v in value} or {"STRING"}
        if len(types) > 1:
            raise NonRetryableError(f"query parameter {name}: mixed types {sorted(types)}")
        return bigquery.ArrayQueryParameter(name, types.pop(), list(value))
    return bigquery.ScalarQueryParameter(name, scalar_type(name, value), value)


def scalar_type(name: str, value: Any) -> str:
    for kind, type_name in _SCALAR_TYPES:
        if isinstance(value, kind):
            naive = isinstance(value, dt.datetime) and value.tzinfo is None
            return "DATETIME" if naive else type_name
    raise NonRetryableError(f"query parameter {name}: unsupported {type(value).__name__}")
