"""Settings: every knob of CoreMachine in one Pydantic model, read from `COREMACHINE_*` environment variables.

Exceptions to the prefix: `DATABASE_URL` and `DATABASE_DIRECT_URL` (the conventional names), the Azure Functions
app-setting names of the Service Bus connection (`ServiceBusConnection`, or for an identity-based connection
`ServiceBusConnection__fullyQualifiedNamespace` and `ServiceBusConnection__clientId`), `AZURE_CLIENT_ID` (the
user-assigned managed identity azure-identity uses), and the host's own variables that tell we run under the
Functions host (`FUNCTIONS_WORKER_RUNTIME`, `WEBSITE_INSTANCE_ID`). Construct one `Settings` at the composition root
and pass it down; nothing reads the environment anywhere else.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, Self

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PGBOUNCER_PORT = "6432"
"""The port of Azure Database for PostgreSQL's built-in PgBouncer: a URL on it is pooled unless said otherwise."""


class Settings(BaseSettings):
    """CoreMachine configuration; unknown `COREMACHINE_*` variables are ignored."""

    model_config = SettingsConfigDict(
        env_prefix="COREMACHINE_",
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
        validate_default=True,
        frozen=True,
    )

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
        description="PostgreSQL connection URL; unset means the embedded server under `data_dir`.",
    )
    data_dir: Path = Field(
        default=Path(".coremachine"),
        description="Local state directory; the embedded server keeps its cluster in `data_dir/pgdata`.",
    )
    transport: Literal["postgres", "servicebus"] = Field(
        default="postgres",
        description="Message transport: the PostgreSQL queue (local default) or Azure Service Bus.",
    )
    servicebus_connection: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "COREMACHINE_SERVICEBUS_CONNECTION", "ServiceBusConnection", "servicebus_connection"
        ),
        description="Service Bus connection string (shared access key); or use `servicebus_namespace`.",
    )
    servicebus_namespace: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "COREMACHINE_SERVICEBUS_NAMESPACE", "ServiceBusConnection__fullyQualifiedNamespace", "servicebus_namespace"
        ),
        description="Service Bus namespace (`<name>.servicebus.windows.net`) reached with an Azure AD identity; "
        "the Functions host's identity-based connection setting. A connection string, if also set, wins.",
    )
    servicebus_client_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "COREMACHINE_SERVICEBUS_CLIENT_ID", "ServiceBusConnection__clientId", "servicebus_client_id"
        ),
        description="Client id of the user-assigned managed identity for Service Bus; unset means `azure_client_id`.",
    )
    azure_client_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("COREMACHINE_AZURE_CLIENT_ID", "AZURE_CLIENT_ID", "azure_client_id"),
        description="Client id of the user-assigned managed identity; unset means DefaultAzureCredential's chain "
        "(system-assigned identity on Azure, `az login` on a laptop).",
    )
    database_auth: Literal["password", "entra"] = Field(
        default="password",
        description="'password': the credentials in `database_url` (or none, for the embedded server); 'entra': "
        "a Microsoft Entra ID token of the managed identity, fetched for every new connection, as the password.",
    )
    database_pgbouncer: bool | None = Field(
        default=None,
        description="`database_url` goes through PgBouncer in transaction mode: no server-side prepared statements, "
        "no LISTEN on it. Unset means: yes when the URL's port is 6432 (Azure's built-in PgBouncer).",
    )
    database_direct_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_DIRECT_URL", "COREMACHINE_DATABASE_DIRECT_URL", "database_direct_url"),
        description="A URL that bypasses PgBouncer, for the PostgreSQL queue's LISTEN connection; without it, "
        "workers behind PgBouncer poll instead of listening.",
    )
    functions_worker_runtime: str | None = Field(
        default=None,
        validation_alias=AliasChoices("FUNCTIONS_WORKER_RUNTIME", "functions_worker_runtime"),
        description="Set by the Azure Functions host (and in local.settings.json); read only to detect the host.",
    )
    website_instance_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("WEBSITE_INSTANCE_ID", "website_instance_id"),
        description="Set by App Service / Azure Functions on every instance; read only to detect Azure.",
    )
    jobs_queue: str = Field(default="jobs", min_length=1, description="Queue carrying job (stage) messages.")
    tasks_queue: str = Field(default="tasks", min_length=1, description="Queue carrying task messages.")
    lock_seconds: float = Field(
        default=60.0,
        description="Visibility timeout: how long a received message stays hidden before it is redelivered.",
    )
    max_deliveries: int = Field(
        default=10,
        description="Deliveries after which a message is dead-lettered (Service Bus MaxDeliveryCount).",
    )
    tasks_per_message: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="How many tasks of a wide stage one task message carries (a stage still gets at least 64 "
        "messages). Unset: 16 on the PostgreSQL transport, where it saves a queue row per task; 1 on Service Bus, "
        "where the Functions host runs one message per invocation.",
    )
    duplicate_window_seconds: float = Field(
        default=600.0,
        description="How long a settled message id is remembered so a resend within the window is dropped.",
    )
    pool_min_size: int = Field(default=1, description="Connections the pool keeps open at least.")
    pool_max_size: int = Field(default=8, description="Connections the pool opens at most.")
    pool_max_lifetime_seconds: float = Field(
        default=1800.0,
        description="A pooled connection older than this is closed and replaced (spreads server-side reconnects).",
    )
    pool_check: bool = Field(
        default=True,
        description="Check a connection (an empty query) as it leaves the pool, so a connection the server or "
        "a load balancer dropped is replaced instead of failing the caller.",
    )
    pool_check_idle_seconds: float = Field(
        default=5.0,
        ge=0,
        description="Only connections idle in the pool at least this long are checked (0: every checkout).",
    )
    worker_batch_size: int = Field(
        default=512,
        description="Most tasks a worker's task thread takes in one batch (one claim, one commit) when they are "
        "fast enough to fit `worker_flush_seconds`; a message of several tasks counts as that many, and a thread "
        "receives at most 64 messages at once.",
    )
    worker_flush_seconds: float = Field(
        default=0.25,
        description="Longest a worker holds finished outcomes before writing them in one transaction.",
    )
    task_lease_seconds: float = Field(
        default=60.0,
        description="How long a task claim lasts unless renewed: a running worker's heartbeat renews it every third "
        "of this, so it only decides how soon a dead worker's task is taken back. Never longer than the stage's "
        "time limit (`Stage.timeout_seconds`, how long one attempt may run).",
    )
    lease_grace_seconds: float = Field(
        default=5.0,
        description="Extra time past a task's lease before the janitor takes it back from a silent worker.",
    )
    overdue_retry_seconds: float = Field(
        default=300.0,
        description="A retry due for this long without being picked up has lost its message; the janitor re-sends it.",
    )
    stuck_job_seconds: float = Field(
        default=3600.0,
        description="A job not updated for this long is reported as stuck by the janitor.",
    )
    applicationinsights_connection_string: str | None = Field(
        default=None,
        validation_alias=AliasChoices("APPLICATIONINSIGHTS_CONNECTION_STRING", "applicationinsights_connection_string"),
        description="Application Insights connection string: spans and metrics are exported there when set.",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "otel_exporter_otlp_endpoint"),
        description="OTLP/HTTP endpoint (e.g. http://localhost:4318) to export spans and metrics to, when no "
        "Application Insights connection string is set; unset means no telemetry.",
    )
    outage_budget_seconds: float = Field(
        default=480.0,
        gt=0,
        description="Functions triggers: how long one invocation waits out a database or transport outage (with "
        "backoff) before giving its message back. Keep it below host.json's functionTimeout.",
    )
    retain_completed_days: float | None = Field(
        default=7.0,
        description="Days a completed job is kept after it finished before the janitor prunes it; empty: forever.",
    )
    retain_completed_with_errors_days: float | None = Field(
        default=30.0,
        description="Days a job that completed with errors is kept after it finished; empty: forever.",
    )
    retain_failed_days: float | None = Field(
        default=30.0, description="Days a failed job is kept after it finished; empty: forever."
    )
    retain_cancelled_days: float | None = Field(
        default=30.0, description="Days a cancelled job is kept after it finished; empty: forever."
    )
    prune_rows_per_pass: int = Field(
        default=50_000,
        description="Most task and event rows one janitor pass deletes (in transactions of 5,000 at most).",
    )
    reports_dir: Path = Field(
        default=Path("reports"),
        description="Where run reports (JSON and CSVs) go when no blob storage is set, one folder per job.",
    )
    artifacts_account_url: str | None = Field(
        default=None,
        description="Blob Storage account URL (https://<account>.blob.core.windows.net): reports go there, "
        "authenticated with DefaultAzureCredential (managed identity on Azure).",
    )
    artifacts_connection: str | None = Field(
        default=None,
        description="Blob Storage connection string (Azurite, or a key-based account); wins over the account URL.",
    )
    artifacts_container: str = Field(
        default="reports",
        min_length=3,
        max_length=63,
        pattern=r"^[a-z0-9]([a-z0-9]|-[a-z0-9])*$",
        description="Blob container holding run reports and other artifacts (created on first write).",
    )
    data_sources: Path | None = Field(
        default=None,
        description="The ingestion domain registry; unset means config/data_sources.yml of the project.",
    )
    data_root: Path | None = Field(
        default=None,
        description="Folder the domains' base folders are relative to; unset means the project root.",
    )
    job_packages: str = Field(
        default="jobs",
        description="Comma-separated packages whose JobDefinition subclasses are registered at start-up.",
    )
    task_packages: str = Field(
        default="services",
        description="Comma-separated packages whose `@register_task` handlers are registered at start-up.",
    )
    log_level: str = Field(default="INFO", description="Root log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="'json' writes one JSON object per line (for machines); 'text' is for humans.",
    )

    http_max_body_bytes: int = Field(
        default=1_048_576,
        ge=1,
        description="Largest request body the HTTP API accepts; a bigger one is refused with 413.",
    )
    admin_key: str | None = Field(
        default=None,
        description="Key (x-functions-key or ?code=) of the HTTP admin routes; unset: open locally, closed on Azure.",
    )
    api_key: str | None = Field(
        default=None,
        description="Key of the HTTP job routes (the admin key works too); unset: open locally, closed on Azure.",
    )

    @field_validator(
        "database_url",
        "database_direct_url",
        "servicebus_connection",
        "servicebus_namespace",
        "servicebus_client_id",
        "azure_client_id",
        "functions_worker_runtime",
        "website_instance_id",
        "admin_key",
        "api_key",
        "artifacts_account_url",
        "artifacts_connection",
        "retain_completed_days",
        "retain_completed_with_errors_days",
        "retain_failed_days",
        "retain_cancelled_days",
        "applicationinsights_connection_string",
        "otel_exporter_otlp_endpoint",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator(
        "lock_seconds",
        "worker_flush_seconds",
        "duplicate_window_seconds",
        "stuck_job_seconds",
        "pool_max_lifetime_seconds",
        "overdue_retry_seconds",
        "task_lease_seconds",
    )
    @classmethod
    def _positive_seconds(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(f"must be a number of seconds greater than 0, got {value}")
        return value

    @field_validator("lease_grace_seconds")
    @classmethod
    def _non_negative_seconds(cls, value: float) -> float:
        if not value >= 0:
            raise ValueError(f"must be a number of seconds of at least 0, got {value}")
        return value

    @field_validator("retain_completed_days", "retain_completed_with_errors_days", "retain_failed_days",
                     "retain_cancelled_days")
    @classmethod
    def _retention_days(cls, value: float | None) -> float | None:
        if value is not None and not value >= 0:
            raise ValueError(f"must be a number of days of at least 0, or empty for forever, got {value}")
        return value

    @field_validator("max_deliveries", "pool_min_size", "pool_max_size", "worker_batch_size", "prune_rows_per_pass")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_level(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = logging.getLevelName(value)
        if isinstance(value, str):
            value = value.strip().upper()
            if value not in _LOG_LEVELS:
                raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.pool_max_size < self.pool_min_size:
            raise ValueError(
                f"pool_max_size ({self.pool_max_size}) must be at least pool_min_size ({self.pool_min_size})"
            )
        if self.jobs_queue == self.tasks_queue:
            raise ValueError(f"jobs_queue and tasks_queue must differ, both are {self.jobs_queue!r}")
        if self.transport == "servicebus" and not (self.servicebus_connection or self.servicebus_namespace):
            raise ValueError(
                "transport 'servicebus' needs a namespace or a connection string: set "
                "ServiceBusConnection__fullyQualifiedNamespace (managed identity) or ServiceBusConnection"
            )
        if self.database_auth == "entra" and not self.database_url:
            raise ValueError("database_auth 'entra' needs DATABASE_URL (the embedded server has no Entra ID)")
        return self

    @field_validator("servicebus_namespace")
    @classmethod
    def _bare_namespace(cls, value: str | None) -> str | None:
        """`sb://name.servicebus.windows.net/` and `name.servicebus.windows.net` both mean the host name."""
        if value is None:
            return None
        return value.strip().removeprefix("sb://").rstrip("/")

    @property
    def servicebus_identity_client_id(self) -> str | None:
        """The managed identity the Service Bus client uses: its own setting, else `azure_client_id`."""
        return self.servicebus_client_id or self.azure_client_id

    @property
    def on_azure_functions(self) -> bool:
        """Running under the Azure Functions host (or App Service): its variables are present."""
        return bool(self.functions_worker_runtime or self.website_instance_id)

    @property
    def pgbouncer(self) -> bool:
        """Whether `database_url` is pooled by PgBouncer in transaction mode (explicit, or port 6432)."""
        if self.database_pgbouncer is not None:
            return self.database_pgbouncer
        if not self.database_url:
            return False
        try:
            port = str(conninfo_to_dict(self.database_url).get("port") or "")
        except psycopg.Error:  # an unparsable URL is reported when the pool first connects, not here
            return False
        return PGBOUNCER_PORT in port.split(",")

    @property
    def log_level_number(self) -> int:
        """`log_level` as the `logging` module's number."""
        return logging.getLevelNamesMapping()[self.log_level]

    @classmethod
    def for_tests(cls, **overrides: Any) -> Settings:
        """Settings for tests: short locks and waits, and the environment ignored so a developer's
        `DATABASE_URL` or `COREMACHINE_*` variables never leak into a test."""
        values: dict[str, Any] = {"lock_seconds": 2.0, "worker_flush_seconds": 0.05, "lease_grace_seconds": 0.5}
        values.update(overrides)
        return _IsolatedSettings(**values)


class _IsolatedSettings(Settings):
    """Settings from keyword arguments only: no environment variables, no dotenv, no secrets directory."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)
