"""The settings' declarations: every knob of dagrelay, documented where it is declared. Read
them through the configuration hub, ``dagrelay.config`` (``get_settings``, ``load_settings``),
which imports this module (and pydantic-settings with it) only when the whole settings are
needed: a read verb of the CLI finds the database URL without it (``config.database_url``)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from dagrelay import capacity
from dagrelay._config_sources import (
    DATABASE_URL_ENV,
    DEFAULT_CALL_PREFIXES,
    DOTTED_NAME,
    config_path,
    module_list,
)


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
        validation_alias=AliasChoices(*DATABASE_URL_ENV, "database_url"),
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
    db_pool_timeout_s: float = Field(
        30.0,
        gt=0,
        le=300,
        description="How long a request thread waits for a pooled connection (every one in a "
        "transaction) before it fails with PoolExhausted and Pub/Sub redelivers the message.",
    )
    request_concurrency: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Requests a router instance serves at once (Terraform's router_concurrency, "
        "also functions-framework's THREADS). With router_max_instances and db_max_connections "
        "the router checks the capacity model (dagrelay.capacity) at start and logs the result.",
    )
    router_max_instances: int | None = Field(
        None, ge=1, le=1000, description="Most router instances at once (capacity check only)."
    )
    db_max_connections: int | None = Field(
        None,
        ge=1,
        description="The database's max_connections (capacity check only; Terraform passes "
        "the tier's).",
    )
    db_other_connections: int = Field(
        capacity.DASHBOARD_INSTANCES * capacity.DASHBOARD_CONNECTIONS + capacity.ADMIN_CONNECTIONS,
        ge=0,
        description="Connections others than the routers may hold: the dashboard functions' "
        "pools and administration (capacity check only).",
    )
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
    cloud_run_endpoint: str | None = Field(
        None,
        description="Cloud Run Admin API endpoint override for the cloudrun.job handler (the "
        "local stand-in's http://127.0.0.1:PORT), used only when set; requests to it carry no "
        "credentials.",
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
    archive_hash: str | None = Field(
        None,
        description="The hash of the function archive this deployment runs (Terraform sets it "
        "on the deploy function to the archive's md5); the deploy step refuses a request for "
        "another archive. Unset: any archive named is accepted (locally, tests).",
    )
    tracing: Literal["off", "console", "gcp"] = Field(
        "off",
        description="Where the spans of batches and attempts go (OpenTelemetry): off (no "
        "tracer: nothing imported, nothing stored), console (stderr, for a local look) or gcp "
        "(Cloud Trace, in the project; Terraform's enable_tracing sets it). The trace id also "
        "goes into each JSON log line (logging.googleapis.com/trace).",
    )
    tracing_sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="The share of batches traced when tracing is on (a batch's attempts follow "
        "its batch's decision).",
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
