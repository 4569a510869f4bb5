"""Which callables ``python.call`` may run: only those under a module prefix the deployment
allows (the ``call_allowed_prefixes`` setting), and never the standard library or dagrelay's
internals, whatever the setting says. Whoever can write a row into ``tasks`` names the
callable, so the check runs twice: when a pipeline is validated or applied (the path), and
before the call (the path before importing anything, then the module of the object found)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

SETTING = "call_allowed_prefixes (DAGRELAY_CALL_ALLOWED_PREFIXES)"
# dagrelay's own modules are internals, except the callables of the example pipelines.
OWN_PACKAGE = "dagrelay"
OWN_ALLOWED = ("dagrelay.examples",)


def module_of(path: str) -> str:
    """The module part of ``pkg.module.function`` or ``pkg.module:function``."""
    if ":" in path:
        return path.partition(":")[0]
    return path.rpartition(".")[0]


def under(module: str, prefix: str) -> bool:
    """``module`` is the package or module ``prefix`` or inside it (whole dotted parts)."""
    prefix = prefix.rstrip(".")
    return bool(prefix) and (module == prefix or module.startswith(prefix + "."))


def refusal(path: str, prefixes: Sequence[str]) -> str | None:
    """Why ``python.call`` must not run ``path`` (a sentence naming it and the setting), or None."""
    return module_refusal(module_of(path), path, prefixes)


def module_refusal(module: str, path: str, prefixes: Sequence[str]) -> str | None:
    """Why a callable of ``module`` (named ``path`` in the task) must not run, or None."""
    top = module.partition(".")[0]
    if not module:
        return f"python.call: {path!r} names no module"
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return (
            f"python.call: {path!r} is in the standard library (module {module!r}), which is "
            f"never allowed, whatever {SETTING} lists"
        )
    own = top == OWN_PACKAGE and not any(under(module, p) for p in OWN_ALLOWED)
    if own:
        return (
            f"python.call: {path!r} is inside dagrelay (module {module!r}), which is never "
            f"allowed (only {', '.join(OWN_ALLOWED)}), whatever {SETTING} lists"
        )
    if not any(under(module, p) for p in prefixes):
        allowed = ", ".join(prefixes) or "nothing"
        return (
            f"python.call: {path!r} (module {module!r}) is not under a module prefix allowed "
            f"by {SETTING}, which allows: {allowed}"
        )
    return None
