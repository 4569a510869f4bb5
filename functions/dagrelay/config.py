"""The configuration hub: one YAML file, every value overridable by an environment variable.

Precedence (highest first): keyword arguments, environment (``DAGRELAY_<FIELD>``, and the usual
``DATABASE_URL``), the YAML file (``DAGRELAY_CONFIG``, default ``dagrelay.yaml`` in the working
directory when it exists), the defaults below. Secrets never come from the file.
"""

from __future__ import annotations

import json
import os
import re
import socket
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from dagrelay.errors import ConfigError

SECRET_FIELDS = ("db_password",)
# A team project's handler and pipeline packages (``dagrelay init``, ``build-function
# --project``), and the callable of the engine-level example pipeline.
DEFAULT_CALL_PREFIXES = ("handlers", "pipelines", "dagrelay.examples")
DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class Settings(BaseSettings):
    # An empty variable is unset (Terraform writes DAGRELAY_HANDLER_MODULES="" when it has none,
    # so that the archive's dagrelay.yaml decides).
    model_config = SettingsConfigDict(env_prefix="DAGRELAY_", extra="forbid", env_ignore_empty=True)

    project_id: str = Field("dagrelay-local", description="Google Cloud project id.")
    region: str = Field("europe-west1", description="Region of the functions and Cloud SQL.")
    events_topic: str = Field("dagrelay-events", description="Topic the router consumes.")
    alerts_topic: str = Field("dagrelay-alerts", description="Topic for terminal failures.")
    dead_letter_topic: str = Field("dagrelay-dead-letter", description="Dead-letter topic.")
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DAGRELAY_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="SQLAlchemy URL (postgresql+pg8000://...). Set locally; unset in GCP.",
    )
    cloud_sql_instance: str | None = Field(
        None, description="PROJECT:REGION:INSTANCE; used (with the connector) when no URL is set."
    )
    db_name: str = Field("dagrelay", description="Database name on Cloud SQL.")
    db_user: str = Field("dagrelay", description="Database user on Cloud SQL.")
    db_password: SecretStr | None = Field(
        None, description="Database password: environment or Secret Manager only."
    )
    db_ip_type: Literal["private", "public", "psc"] = Field("private", description="Cloud SQL IP.")
    db_pool_size: int = Field(5, ge=1, le=50, description="Connections kept per process.")
    db_max_overflow: int = Field(2, ge=0, le=50, description="Extra connections under load.")
    inbox_bucket: str = Field(
        "dagrelay-inbox",
        description="Bucket whose inbox/<source>/ objects are ingested (staging/, archive/ and "
        "rejected/ live in the same bucket).",
    )
    sources_file: Path | None = Field(
        None, description="Ingestion sources (YAML); unset: schema/sources.yaml."
    )
    ingest_workdir: Path | None = Field(
        None,
        description="Where ingestion writes its temp files (the downloaded object, its Parquet); "
        "unset: the system temp dir, which is memory on Cloud Functions.",
    )
    handler_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Modules imported at start to register user handlers: a list, or in the "
        "environment a comma-separated string (acme.handlers,acme.more) or a JSON list.",
    )
    call_allowed_prefixes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_CALL_PREFIXES),
        description="Module prefixes whose callables the python.call handler may run (whole "
        "dotted parts: 'handlers' allows handlers.orders:f, not handlersx.f): a list, or in the "
        "environment a comma-separated string or a JSON list. Default: a team project's "
        "handlers/ and pipelines/ packages and dagrelay.examples. The standard library and "
        "dagrelay's other modules are refused even when listed (dagrelay.handlers.callables).",
    )
    bigquery_project: str | None = Field(
        None, description="Project that runs BigQuery jobs; unset: project_id."
    )
    bigquery_location: str | None = Field(
        None,
        description="Location of BigQuery jobs (EU, europe-west1, ...); unset: BigQuery infers "
        "it from the datasets. Set it for regional datasets, so jobs are found by id.",
    )
    bigquery_endpoint: str | None = Field(
        None,
        description="BigQuery API endpoint override (e.g. a local emulator's http://127.0.0.1:"
        "PORT), used only when set; requests to it carry no credentials.",
    )
    bigquery_retry_deadline_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="How long one BigQuery API call is retried on transient errors.",
    )
    pipelines_dir: Path | None = Field(
        None, description="Where sql_file params are read from; unset: schema/pipelines."
    )
    dashboard_caller: str = Field(
        "local",
        min_length=1,
        max_length=100,
        pattern=r"^[^\x00-\x1f\x7f<>]+$",
        description="Who the operator dashboard records in triggered_by (as dashboard:<this>) "
        "when no id_token_audiences are set (locally; no token is read then).",
    )
    id_token_audiences: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="The operator function's URLs, as the audiences of its callers' ID tokens "
        "(comma-separated in the environment). Set (Terraform sets it): every action needs a "
        "Google-signed ID token for one of them, verified (signature, issuer, audience, "
        "expiry), and records its verified email. Unset (locally): no token is read and "
        "dashboard_caller is recorded.",
    )
    worker_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}",
        description="Recorded in each attempt's history: which process ran it.",
    )

    @field_validator(
        "handler_modules", "call_allowed_prefixes", "id_token_audiences", mode="before"
    )
    @classmethod
    def _module_list(cls, value: Any) -> Any:
        return module_list(value) if isinstance(value, str) else value

    @field_validator("call_allowed_prefixes")
    @classmethod
    def _dotted_prefixes(cls, value: list[str]) -> list[str]:
        prefixes = [p.strip().rstrip(".") for p in value]
        bad = [p for p in prefixes if not DOTTED_NAME.fullmatch(p)]
        if bad:
            raise ValueError(f"not dotted module names: {bad}")
        return prefixes

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = config_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)


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


def _check_file_has_no_secrets(path: Path | None) -> None:
    if path is None:
        return
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
