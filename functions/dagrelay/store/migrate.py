"""Running the Alembic migrations programmatically (``dagrelay db upgrade``, tests, the stack)."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from dagrelay.errors import ConfigError

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def migrations_dir() -> Path:
    override = os.environ.get("DAGRELAY_MIGRATIONS_DIR")
    candidates = [Path(override)] if override else []
    candidates += [_PACKAGE_DIR.parent / "migrations", _PACKAGE_DIR.parent.parent / "migrations"]
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigError(f"migrations not found (searched {', '.join(map(str, candidates))})")


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def revisions() -> list[str]:
    """Every revision id, oldest first."""
    script = ScriptDirectory.from_config(_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def head() -> str:
    return revisions()[-1]
