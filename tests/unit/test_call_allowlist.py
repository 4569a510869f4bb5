"""``python.call`` runs only callables under the deployment's module prefixes: refused when a
pipeline is validated (naming the callable and the setting), and again before the call."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagrelay.config import DEFAULT_CALL_PREFIXES, Settings, load_settings
from dagrelay.errors import ConfigError, NonRetryableError
from dagrelay.handlers.builtin import resolve_callable
from dagrelay.handlers.callables import refusal
from dagrelay.handlers.registry import Registration
from dagrelay.pipelines.spec import load_pipeline
from dagrelay.pipelines.validate import problems, registered_handlers

SETTING = "call_allowed_prefixes (DAGRELAY_CALL_ALLOWED_PREFIXES)"


@pytest.fixture(scope="module")
def handlers() -> dict[str, Registration]:
    return registered_handlers()


def call_pipeline(tmp_path: Path, callable_path: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(
        "pipeline: p\ntasks:\n"
        f"  - {{name: a, handler: python.call, params: {{callable: '{callable_path}'}}}}\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("path", ["subprocess.run", "os.system", "os:system", "builtins.eval"])
def test_validate_refuses_the_standard_library(
    tmp_path: Path, handlers: dict[str, Registration], path: str
) -> None:
    spec = load_pipeline(call_pipeline(tmp_path, path))
    # Even when a deployment lists the module: the standard library is never allowed.
    for prefixes in (DEFAULT_CALL_PREFIXES, ("os", "subprocess", "builtins")):
        [problem] = problems(spec, handlers, call_prefixes=prefixes)
        assert problem.startswith(f"p.yaml: task 'a': python.call: {path!r} is in the standard")
        assert SETTING in problem


@pytest.mark.parametrize(
    "path", ["dagrelay.store.db:get_engine", "dagrelay.handlers.builtin.call", "dagrelay:x"]
)
def test_validate_refuses_dagrelay_internals(
    tmp_path: Path, handlers: dict[str, Registration], path: str
) -> None:
    spec = load_pipeline(call_pipeline(tmp_path, path))
    [problem] = problems(spec, handlers, call_prefixes=("dagrelay",))
    assert f"{path!r} is inside dagrelay" in problem
    assert SETTING in problem


def test_validate_refuses_a_module_outside_the_prefixes(
    tmp_path: Path, handlers: dict[str, Registration]
) -> None:
    spec = load_pipeline(call_pipeline(tmp_path, "handlersx.evil:f"))
    [problem] = problems(spec, handlers, call_prefixes=("handlers",))
    assert "'handlersx.evil:f' (module 'handlersx.evil') is not under a module prefix" in problem
    assert problem.endswith(f"{SETTING}, which allows: handlers")


@pytest.mark.parametrize(
    ("path", "prefixes"),
    [
        ("handlers.orders:score", DEFAULT_CALL_PREFIXES),
        ("pipelines.orders.publish", DEFAULT_CALL_PREFIXES),
        ("dagrelay.examples.calculate_profit", DEFAULT_CALL_PREFIXES),
        ("acme.etl.load:one", ("acme.etl",)),
        ("acme.etl:one", ("acme.etl.",)),
    ],
)
def test_allowed_callables_pass(path: str, prefixes: tuple[str, ...]) -> None:
    assert refusal(path, prefixes) is None


def test_the_default_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGRELAY_CALL_ALLOWED_PREFIXES", raising=False)
    assert Settings().call_allowed_prefixes == ["handlers", "pipelines", "dagrelay.examples"]
    monkeypatch.setenv("DAGRELAY_CALL_ALLOWED_PREFIXES", "acme.etl, acme.more.")
    assert load_settings().call_allowed_prefixes == ["acme.etl", "acme.more"]
    monkeypatch.setenv("DAGRELAY_CALL_ALLOWED_PREFIXES", "acme etl")
    with pytest.raises(ConfigError, match="call_allowed_prefixes"):
        load_settings()


def test_run_time_refuses_before_importing() -> None:
    with pytest.raises(NonRetryableError) as refused:
        resolve_callable("subprocess.run", ("subprocess",))
    assert "'subprocess.run' is in the standard library" in str(refused.value)
    assert SETTING in str(refused.value)


def test_run_time_refuses_a_stdlib_function_imported_into_an_allowed_module() -> None:
    """``<this module>:refusal`` is an allowed path, but the object is
    dagrelay's; ``Path`` imported here is pathlib's."""
    with pytest.raises(NonRetryableError, match="inside dagrelay"):
        resolve_callable(f"{__name__}:refusal", (__name__,))
    with pytest.raises(NonRetryableError, match=r"standard library.*defined in 'pathlib'"):
        resolve_callable(f"{__name__}:Path", (__name__,))


def sample(x: int) -> int:
    return x + 1


def test_an_allowed_callable_resolves() -> None:
    assert resolve_callable(f"{__name__}:sample", (__name__,))(1) == 2
