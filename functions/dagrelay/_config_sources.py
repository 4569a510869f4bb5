"""Where the settings come from, read without pydantic: the configuration file's path, the
environment's names of the database URL and the syntax of a list of modules. Shared by the
settings' declarations (``dagrelay._settings``) and the hub's light path
(``dagrelay.config.database_url``); read the settings through ``dagrelay.config``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from dagrelay.errors import ConfigError

SECRET_FIELDS = ("db_password",)
# The environment variables of ``database_url``, first match wins (its Field's aliases).
DATABASE_URL_ENV = ("DAGRELAY_DATABASE_URL", "DATABASE_URL")
# A team project's handler and pipeline packages (``dagrelay init``, ``build-function
# --project``), and the callable of the engine-level example pipeline: ``call_allowed_prefixes``.
DEFAULT_CALL_PREFIXES = ("handlers", "pipelines", "dagrelay.examples")
DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def module_list(text: str) -> list[str]:
    """``a.b,c`` or ``["a.b", "c"]`` as a list of module names."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            parsed = json.loads(stripped)
        except ValueError as exc:
            raise ValueError(f"not a JSON list of module names: {exc}") from exc
        if not isinstance(parsed, list) or not all(isinstance(m, str) for m in parsed):
            raise ValueError("a JSON list of module names must hold strings only")
        return [m.strip() for m in parsed if m.strip()]
    return [m.strip() for m in stripped.split(",") if m.strip()]


def config_path() -> Path | None:
    explicit = os.environ.get("DAGRELAY_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"DAGRELAY_CONFIG points at {path}, which is not a file")
        return path
    default = Path("dagrelay.yaml")
    return default if default.is_file() else None
