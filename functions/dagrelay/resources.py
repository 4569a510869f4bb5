"""Where the files dagrelay loads at run time (named SQL, JSON Schemas) live.

In the repository they are in ``schema/`` at the top level; in the deployed function's archive
``schema/`` sits next to the ``dagrelay`` package. ``DAGRELAY_SCHEMA_DIR`` overrides both.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from dagrelay.errors import ConfigError

_PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def schema_dir() -> Path:
    override = os.environ.get("DAGRELAY_SCHEMA_DIR")
    candidates = [Path(override)] if override else []
    candidates += [_PACKAGE_DIR.parent / "schema", _PACKAGE_DIR.parent.parent / "schema"]
    for candidate in candidates:
        if (candidate / "sql" / "tasks.sql").is_file():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"schema directory with sql/tasks.sql not found (searched {searched})")
