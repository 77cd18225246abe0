"""The data-source configuration: Pydantic models of `config/data_sources.yml` and how the file is loaded.

Loading fails with a `DataSourcesError` naming the file and the offending field, so a broken file stops
start-up instead of a job half-way through. Paths in the file are relative to the project root.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import ConfigurationError
from services.ingestion.readers import FileFormat

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_SOURCES = Path("config/data_sources.yml")
DATA_SOURCES_ENV = "COREMACHINE_DATA_SOURCES"
DATA_ROOT_ENV = "COREMACHINE_DATA_ROOT"

Identifier = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]


class DataSourcesError(ConfigurationError):
    """`data_sources.yml` cannot be read or does not validate; the message names the file and field."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class LoadMode(StrEnum):
    DELETE_INSERT = "delete_insert"
    APPEND = "append"


class VersionStrategy(StrEnum):
    HIGHEST = "highest"
    LATEST_MODIFIED = "latest_modified"
    NONE = "none"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SourceConfig(_Strict):
    """Where a domain's workbooks are and which sheet holds the data."""

    base_folder: str = Field(min_length=1, description="Folder under the data root (or absolute)")
    patterns: list[str] = Field(min_length=1, description="Glob patterns matched inside the chosen folder")
    exclude: list[str] = Field(default_factory=lambda: ["~$*", ".*"])
    version_folders: VersionStrategy = VersionStrategy.HIGHEST
    version_pattern: str = r"^V(\d+)$"
    sheet: str | None = Field(default=None, description="Sheet name; the first sheet when omitted")
    file_format: FileFormat = Field(
        default=FileFormat.AUTO, alias="format",
        description="xlsx, xlsm, xls, ods or csv; auto (the default) goes by each file's extension",
    )

    @field_validator("version_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        if pattern.groups != 1:
            raise ValueError("needs exactly one group capturing the version number")
        return value


class TargetConfig(_Strict):
    """The warehouse table a domain loads into."""

    db_schema: Identifier = Field(default="warehouse", alias="schema")
    table: Identifier
    primary_key: list[Identifier] = Field(min_length=1)
    load_mode: LoadMode = LoadMode.DELETE_INSERT

    @property
    def qualified(self) -> str:
        return f"{self.db_schema}.{self.table}"


class ReferenceConfig(_Strict):
    """A reference table backfilled from a domain's records: `columns` maps reference column → record column."""

    db_schema: Identifier = Field(default="warehouse", alias="schema")
    table: Identifier
    key: list[Identifier] = Field(min_length=1)
    columns: dict[Identifier, Identifier] = Field(min_length=1)

    @model_validator(mode="after")
    def _key_in_columns(self) -> ReferenceConfig:
        missing = [k for k in self.key if k not in self.columns]
        if missing:
            raise ValueError(f"key column(s) {missing} are not among columns {sorted(self.columns)}")
        return self

    @property
    def qualified(self) -> str:
        return f"{self.db_schema}.{self.table}"


class QualityConfig(_Strict):
    """Rules the quality gate checks before anything is loaded."""

    required_columns: list[Identifier] = Field(default_factory=list)
    unique_key: bool = True
    max_drift: float = Field(default=0.1, ge=0.0, le=1.0, description="Largest share of source rows that may not load")
    allow_file_errors: bool = False


class CompanyReference(_Strict):
    db_schema: Identifier = Field(default="warehouse", alias="schema")
    table: Identifier = "company_reference"
    name_column: Identifier = "company_name"
    id_column: Identifier = "company_id"


class EnrichmentConfig(_Strict):
    """Company-id resolution: reference table first, then an optional external provider within a budget."""

    enabled: bool = False
    name_column: Identifier = "company_name"
    id_column: Identifier = "company_id"
    reference: CompanyReference = CompanyReference()
    provider: str | None = Field(
        default=None, pattern=r"^[\w.]+:[\w]+$", description="'module:factory' of an external lookup; off when unset"
    )
    lookup_budget: int = Field(default=0, ge=0, description="External lookups allowed per run and domain")
    temporary_id_prefix: str = Field(default="TMP", pattern=r"^[A-Z]{1,8}$")


class DomainConfig(_Strict):
    """One data domain: source files, target table, references, quality rules, enrichment."""

    name: Identifier
    description: str = ""
    service: str | None = Field(default=None, description="Module (or 'module:attr') of the domain service")
    source: SourceConfig
    target: TargetConfig
    references: list[ReferenceConfig] = Field(default_factory=list)
    quality: QualityConfig = QualityConfig()
    enrichment: EnrichmentConfig = EnrichmentConfig()

    @property
    def service_path(self) -> str:
        return self.service or f"services.ingestion.domains.{self.name}"


class DataSources(_Strict):
    """The whole file: a data root and the domains by name."""

    version: int = 1
    data_root: str = "sample_data"
    domains: dict[Identifier, DomainConfig] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _names_from_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("domains"), dict):
            domains = {}
            for key, value in data["domains"].items():
                domains[key] = {"name": key, **value} if isinstance(value, dict) else value
            data = {**data, "domains": domains}
        return data

    @model_validator(mode="after")
    def _names_match_keys(self) -> DataSources:
        for key, domain in self.domains.items():
            if domain.name != key:
                raise ValueError(f"domains.{key}.name is {domain.name!r}; it must equal its key")
        return self

    def names(self) -> list[str]:
        return sorted(self.domains)

    def data_root_path(self, override: Path | None = None) -> Path:
        env = os.environ.get(DATA_ROOT_ENV)
        root = override or (Path(env) if env else Path(self.data_root))
        return root if root.is_absolute() else PROJECT_ROOT / root


def data_sources_path(override: Path | None = None) -> Path:
    """`override`, else `$COREMACHINE_DATA_SOURCES`, else `config/data_sources.yml` under the project root."""
    env = os.environ.get(DATA_SOURCES_ENV)
    path = override or (Path(env) if env else DEFAULT_DATA_SOURCES)
    return path if path.is_absolute() else PROJECT_ROOT / path


def parse_data_sources(path: Path) -> DataSources:
    """Read and validate the file; every problem is reported as `file: field: message`."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataSourcesError(path, [f"cannot read: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise DataSourcesError(path, [f"{where}invalid YAML: {getattr(exc, 'problem', None) or exc}"]) from exc
    if not isinstance(raw, dict):
        raise DataSourcesError(path, ["top level must be a mapping with a 'domains' key"])
    try:
        return DataSources.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()]
        raise DataSourcesError(path, problems) from exc
