"""The handler registry. Users add handlers without touching the engine, either by decorating a
function in a module listed in the ``handler_modules`` setting, or through the
``dagrelay.handlers`` entry-point group (``name = "package.module:function"``)."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import Any, Generic

from jsonschema import Draft202012Validator
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from typing_extensions import TypeVar

from dagrelay import schemas
from dagrelay.config import get_settings
from dagrelay.errors import ConfigError, NonRetryableError, UnknownHandler
from dagrelay.messages import unstorable_json

MAX_OUTPUT_BYTES = 64 * 1024
BUILT_IN_MODULES = ("dagrelay.handlers.builtin",)
# Built-ins imported on first use of one of their names (by prefix), so that a process that
# never runs a BigQuery task never imports the BigQuery client (cold start): name prefix -> module.
LAZY_BUILT_INS = {
    "bigquery.": "dagrelay.handlers.bigquery.handlers",
    "cloudrun.": "dagrelay.handlers.cloudrun",
    "ingest.": "dagrelay.ingest.handlers",
    "sensor.gcs": "dagrelay.handlers.sensors.gcs",
    "sensor.bigquery": "dagrelay.handlers.sensors.bigquery",
    "sensor.signal": "dagrelay.handlers.sensors.signal",
}
ENTRY_POINT_GROUP = "dagrelay.handlers"


P = TypeVar("P", default=Mapping[str, Any])


@dataclass(frozen=True)
class HandlerContext(Generic[P]):
    """What a handler receives: resolved params (an instance of the handler's params model
    when it registered one, else a mapping), the batch, and its parents' outputs."""

    pipeline: str
    batch_id: str
    task: str
    attempt: int
    params: P
    # The task's run in this batch (its task_log row): a rerun gets a new one, so ids derived
    # from (run_id, attempt), like BigQuery job ids, never collide across reruns.
    run_id: int = 0
    batch_params: Mapping[str, Any] = field(default_factory=dict)
    parent_outputs: Mapping[str, Any] = field(default_factory=dict)
    # Long handlers call heartbeat() to extend their lease (by the task's timeout_s); it
    # returns False once the attempt is no longer live (its lease expired, the batch was
    # cancelled), and the handler should stop.
    heartbeat: Callable[[], bool] = field(default=lambda: True)
    # An instance of a mapped task: its item and the item's index (None otherwise).
    item: Any = None
    map_index: int | None = None
    # The task's timeout_s: the lease of a running attempt, and of a deferred one from each
    # poll on; a handler whose external work takes a time limit can pass it on.
    timeout_s: int | None = None
    # The engine's clock (injected in tests): what a handler that measures time (a sensor's
    # timeout) reads instead of the wall clock.
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @property
    def batch(self) -> str:
        """The batch's id (``batch_id``)."""
        return self.batch_id

    @property
    def scheduled_for(self) -> datetime | None:
        """The schedule tick that started the batch; None for a batch started otherwise."""
        value = self.batch_params.get("scheduled_for")
        return datetime.fromisoformat(value) if isinstance(value, str) else None

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt of this task's run in this batch — also for the attempt
        that repeats one killed after its side effect and before its return — and new for a
        rerun. A handler runs at least once per attempt: use this as the request id, MERGE key
        or object name of a side effect that must happen once."""
        run = f"{self.pipeline}\x1f{self.batch_id}\x1f{self.task}\x1f{self.run_id}"
        return "dr-" + hashlib.sha256(run.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Deferred:
    """Returned by a handler (or its poll) whose work goes on elsewhere, e.g. a BigQuery job:
    the attempt stays PROCESSING, ``job`` (a small JSON object) is kept in task_log, and the
    registered ``poll`` is called with it after ``poll_after_s`` (by a poll_task message or
    the sweeper), until it returns an output, raises, or defers again. A deferred attempt's
    lease is renewed by each poll, so a job may outlive the function's timeout. A ``cancel``
    registered beside the poll stops the work when the attempt is cancelled or its lease
    expires (ARCHITECTURE.md, "Deferred work")."""

    job: Mapping[str, Any]
    poll_after_s: float = 10.0


# A deferred job that says what it waits for (``job["waiting_for"]``, e.g. "gs://b/x", and
# ``job["since"]``, an ISO time) is a pure wait, like a sensor's: it holds nothing elsewhere, so
# a cancel of its batch ends it CANCELLED at once (ARCHITECTURE.md, "Sensors"), and the status
# pages show "waiting for <what>, since <when>".
WAITING_FOR = "waiting_for"


Output = Mapping[str, Any] | Deferred | None
Handler = Callable[[HandlerContext[Any]], Output]
Poll = Callable[[HandlerContext[Any], Mapping[str, Any]], Output]
# Stops a deferred attempt's external work (its job as last deferred). Called by the engine when
# the attempt's batch is cancelled or its lease expires; it may be called more than once (a
# retry after a failure, a cancel racing a poll), so it must be idempotent: stopping work that
# has already ended is success. It raises NonRetryableError when stopping can never work (the
# engine gives up and says so), any other exception to be called again later.
Cancel = Callable[[HandlerContext[Any], Mapping[str, Any]], None]


@dataclass(frozen=True)
class Registration:
    name: str
    function: Handler
    params_schema: Mapping[str, Any] | None = None
    poll: Poll | None = None
    # Params passed through as written: no {placeholder} resolution (e.g. SQL, whose values
    # must travel as query parameters, and whose braces are not placeholders).
    raw_params: frozenset[str] = frozenset()
    params_model: type[BaseModel] | None = None
    cancel: Cancel | None = None

    def check_params(self, params: Mapping[str, Any], task: str) -> None:
        self.parse_params(params, task)

    def parse_params(self, params: Mapping[str, Any], task: str) -> Any:
        """The params as the handler receives them: an instance of its model, or the mapping
        (checked against its JSON Schema). ``NonRetryableError`` naming the task and field."""
        if self.params_model is not None:
            try:
                return self.params_model.model_validate(dict(params))
            except PydanticValidationError as exc:
                raise NonRetryableError(
                    f"task {task!r} ({self.name}): params {model_problems(exc)}"
                ) from None
        if self.params_schema is not None:
            problem = schemas.problem(schemas.for_schema(self.params_schema), params, "(params)")
            if problem is not None:
                raise NonRetryableError(f"task {task!r} ({self.name}): params {problem}")
        return params


def model_problems(exc: PydanticValidationError) -> str:
    """A params model's errors on one line: ``field: message; ...``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or '(params)'}: {error['msg']}"
        for error in exc.errors()
    )


class HandlerRegistry:
    def __init__(self, *, load: bool = True) -> None:
        """``load=False``: only what is registered on it (no built-ins, modules or plugins)."""
        self._handlers: dict[str, Registration] = {}
        self._lock = threading.Lock()
        self._loaded_plugins = not load

    def register(
        self,
        name: str,
        function: Handler,
        params_schema: Mapping[str, Any] | None = None,
        poll: Poll | None = None,
        raw_params: frozenset[str] = frozenset(),
        *,
        params_model: type[BaseModel] | None = None,
        cancel: Cancel | None = None,
    ) -> None:
        if params_model is not None:
            params_schema = params_model.model_json_schema()
        if params_schema is not None:
            Draft202012Validator.check_schema(params_schema)
        if cancel is not None and poll is None:
            raise ValueError(f"handler {name!r}: a cancel stops deferred work; it needs a poll")
        registration = Registration(
            name, function, params_schema, poll, raw_params, params_model, cancel
        )
        with self._lock:
            existing = self._handlers.get(name)
            if existing is not None and not _same(existing, registration):
                raise ValueError(f"handler {name!r} is already registered")
            self._handlers[name] = registration

    def get(self, name: str) -> Registration:
        self.load_plugins()
        if name not in self._handlers:
            self._load_lazy(name.startswith)
        try:
            return self._handlers[name]
        except KeyError:
            raise UnknownHandler(name, self._handlers) from None

    def registration_of(self, function: Callable[..., Any]) -> Registration | None:
        """The registration of ``function`` among those registered so far (a function is
        registered by importing its module: nothing is loaded here); None if it is not."""
        with self._lock:
            return next((r for r in self._handlers.values() if r.function is function), None)

    def names(self) -> list[str]:
        self.load_plugins()
        self._load_lazy(lambda _: True)
        return sorted(self._handlers)

    def _load_lazy(self, wanted: Callable[[str], bool]) -> None:
        for prefix, module in LAZY_BUILT_INS.items():
            if wanted(prefix):
                importlib.import_module(module)

    def load_plugins(self, modules: list[str] | None = None) -> None:
        """Import the built-ins, the configured modules and the entry points (once)."""
        if self._loaded_plugins and not modules:
            return
        for module in BUILT_IN_MODULES:
            importlib.import_module(module)
        for module in modules or get_settings().handler_modules:
            import_handler_module(module)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            self.register(ep.name, ep.load())
        self._loaded_plugins = True


default_registry = HandlerRegistry()


def import_handler_module(module: str) -> None:
    """Import a module of user handlers; a module that is not there is one ``ConfigError``
    line saying what to do (a module that fails inside keeps its own traceback)."""
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # a project's modules, for the dagrelay command run in it
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not _is_prefix(exc.name, module):
            raise
        raise ConfigError(
            f"handler module {module!r} not found (from handler_modules / "
            f"DAGRELAY_HANDLER_MODULES; searched the working directory and sys.path): install "
            f"it, run from the directory that holds it, or add that directory to PYTHONPATH"
        ) from None


def _is_prefix(missing: str, module: str) -> bool:
    return module == missing or module.startswith(missing + ".")


def _same(old: Registration, new: Registration) -> bool:
    """The same handler registered again: the same function object, or the same function
    re-imported (a module loaded twice under one name, a reloaded file)."""
    if old.function is new.function:
        return True
    return _qualified(old.function) == _qualified(new.function)


def _qualified(function: Callable[..., Any]) -> tuple[str, str]:
    return (getattr(function, "__module__", ""), getattr(function, "__qualname__", ""))


H = TypeVar("H", bound=Callable[..., Any])


def handler(
    name: str,
    params_schema: Mapping[str, Any] | None = None,
    poll: Poll | None = None,
    raw_params: frozenset[str] = frozenset(),
    *,
    params: type[BaseModel] | None = None,
    cancel: Cancel | None = None,
) -> Callable[[H], H]:
    """Register a function as the handler ``name`` in the default registry (with ``poll``
    if it may return Deferred, and ``cancel`` if its deferred work can be stopped;
    ``raw_params`` are not placeholder-resolved). ``params``, a
    pydantic model, types the params: checked when a pipeline is validated or applied, and
    handed to the handler as ``ctx.params``, an instance of the model::

        class ExportParams(BaseModel):
            table: str
            limit: int = 100

        @handler("acme.export", params=ExportParams)
        def export(ctx: HandlerContext[ExportParams]) -> dict[str, int]:
            return {"rows": ctx.params.limit}
    """

    def decorate(function: H) -> H:
        default_registry.register(
            name, function, params_schema, poll, raw_params, params_model=params, cancel=cancel
        )
        return function

    return decorate


def check_output(output: Any, task: str) -> dict[str, Any] | None:
    """A handler's output must be a JSON object small enough to keep in task_log, and one
    PostgreSQL's JSONB can hold (no NUL character, no NaN): else the task ends ERROR at once,
    naming where (a repeat would only return it again)."""
    if output is None:
        return None
    if not isinstance(output, Mapping):
        raise NonRetryableError(f"task {task!r} returned {type(output).__name__}, not a mapping")
    try:
        encoded = json.dumps(output)
    except (TypeError, ValueError) as exc:
        raise NonRetryableError(f"task {task!r} output is not JSON-serialisable: {exc}") from exc
    if problem := unstorable_json(output, "output"):
        raise NonRetryableError(f"task {task!r} output cannot be stored: {problem}")
    if len(encoded) > MAX_OUTPUT_BYTES:
        raise NonRetryableError(
            f"task {task!r} output is {len(encoded)} bytes; the limit is {MAX_OUTPUT_BYTES}"
        )
    return dict(output)


def check_deferred(deferred: Deferred, task: str) -> Deferred:
    """A deferral's job is kept in task_log: a small JSON object; its poll delay is sane."""
    checked = check_output(deferred.job, task)
    if not checked:
        raise NonRetryableError(f"task {task!r} deferred without a job to poll")
    if not 0 <= deferred.poll_after_s <= 3600:
        raise NonRetryableError(f"task {task!r} deferred with poll_after_s={deferred.poll_after_s}")
    return deferred
