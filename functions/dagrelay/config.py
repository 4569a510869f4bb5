"""The configuration hub: one YAML file, every value overridable by an environment variable.

Precedence (highest first): keyword arguments, environment (``DAGRELAY_<FIELD>``, and the usual
``DATABASE_URL``), the YAML file (``DAGRELAY_CONFIG``, default ``dagrelay.yaml`` in the working
directory when it exists), the defaults. Secrets never come from the file.

Every setting is declared, with its default and its documentation, in ``dagrelay._settings``
(``Settings``, reachable here as ``dagrelay.config.Settings``). That module, and pydantic-settings
with it (~0.2 s of CPU), is imported only when the whole settings are read: ``database_url()``
answers the CLI's read verbs from the environment alone when no configuration file is in play.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagrelay._config_sources import (
    DATABASE_URL_ENV,
    DEFAULT_CALL_PREFIXES,
    SECRET_FIELDS,
    config_path,
    module_list,
)
from dagrelay.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import ValidationError

    from dagrelay._settings import Settings

__all__ = [
    "DEFAULT_CALL_PREFIXES",
    "SECRET_FIELDS",
    "Settings",
    "config_path",
    "database_url",
    "get_settings",
    "load_settings",
    "module_list",
]


def __getattr__(name: str) -> Any:
    """``dagrelay.config.Settings``: the declarations, imported on first use."""
    if name != "Settings":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from dagrelay._settings import Settings  # noqa: PLC0415 - pydantic-settings on first use

    return Settings


def _check_file_has_no_secrets(path: Path | None) -> None:
    if path is None:
        return
    import yaml  # noqa: PLC0415 - only with a configuration file

    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of settings")
    for field in SECRET_FIELDS:
        if field in data:
            raise ConfigError(f"{path}: {field} is a secret; set DAGRELAY_{field.upper()} instead")


def load_settings(**overrides: Any) -> Settings:
    from pydantic import ValidationError  # noqa: PLC0415 - see the module's docstring
    from pydantic_settings import SettingsError  # noqa: PLC0415

    from dagrelay._settings import Settings  # noqa: PLC0415

    _check_file_has_no_secrets(config_path())
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_one_line(exc)}") from None
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


def _one_line(exc: ValidationError) -> str:
    """Each problem as ``field: message`` (the environment variable's name when it has one)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])} "
        f"(DAGRELAY_{str(error['loc'][0]).upper()}): {error['msg']}"
        for error in exc.errors()
    )


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def database_url() -> str | None:
    """The database URL (``Settings.database_url``), read cheaply: with no configuration file,
    from the environment as pydantic-settings reads it (its aliases in order, names in any case,
    an empty value unset) without importing it; otherwise from the whole settings. Only what is
    read is validated: a malformed unrelated variable fails the verbs that load everything."""
    if config_path() is not None:
        return get_settings().database_url
    env = {name.upper(): value for name, value in os.environ.items()}
    for name in DATABASE_URL_ENV:
        if env.get(name):
            return env[name]
    return None
