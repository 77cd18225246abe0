"""The domain catalog: the validated data sources plus each domain's service, checked against each other.

`load_catalog(path)` is what start-up, submit preparation and the handlers call (through `IngestRuntime.catalog`).
It is cached per file (path, modification time and size), so an edited file is picked up and tests can point
at their own file.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from core.errors import PermanentError
from services.ingestion.config import DataSources, DataSourcesError, DomainConfig, data_sources_path, parse_data_sources
from services.ingestion.models import DomainService
from services.ingestion.tables import optional_fields


class UnknownDomain(PermanentError):
    """A domain name that `data_sources.yml` does not define."""

    def __init__(self, name: str, valid: list[str]) -> None:
        self.name = name
        self.valid = valid
        super().__init__(f"unknown domain {name!r}; valid domains: {', '.join(valid) or '(none)'}")


@dataclass(frozen=True)
class DomainCatalog:
    path: Path
    sources: DataSources
    services: dict[str, DomainService]

    def names(self) -> list[str]:
        return self.sources.names()

    def domain(self, name: str) -> DomainConfig:
        try:
            return self.sources.domains[name]
        except KeyError:
            raise UnknownDomain(name, self.names()) from None

    def service(self, name: str) -> DomainService:
        self.domain(name)
        return self.services[name]

    def data_root(self, override: Path | None = None) -> Path:
        return self.sources.data_root_path(override)


_lock = threading.Lock()
_cache: dict[tuple[Path, int, int], DomainCatalog] = {}


def load_catalog(path: Path | None = None) -> DomainCatalog:
    """The catalog for `path` (default: runtime setting, `$COREMACHINE_DATA_SOURCES`, `config/data_sources.yml`)."""
    resolved = data_sources_path(path)
    try:
        stat = resolved.stat()
    except OSError as exc:
        raise DataSourcesError(resolved, [f"cannot read: {exc.strerror or exc}"]) from exc
    key = (resolved, stat.st_mtime_ns, stat.st_size)
    with _lock:
        cached = _cache.get(key)
        if cached is None:
            cached = _build(resolved)
            _cache.clear()
            _cache[key] = cached
        return cached


def _build(path: Path) -> DomainCatalog:
    sources = parse_data_sources(path)
    services: dict[str, DomainService] = {}
    problems: list[str] = []
    for name, domain in sources.domains.items():
        try:
            services[name] = resolve_service(domain.service_path)
        except (ImportError, AttributeError, TypeError) as exc:
            problems.append(f"domains.{name}.service: {exc}")
            continue
        problems.extend(check_domain(domain, services[name]))
    problems.extend(check_shared_tables(sources))
    if problems:
        raise DataSourcesError(path, problems)
    return DomainCatalog(path, sources, services)


def resolve_service(dotted: str) -> DomainService:
    """`package.module` (its `service` attribute) or `package.module:attr`."""
    module_name, _, attr = dotted.partition(":")
    module = importlib.import_module(module_name)
    service = getattr(module, attr or "service")
    if not isinstance(service, DomainService):
        raise TypeError(f"{dotted} is not a domain service (needs input_model, output_model and process)")
    return service


def check_domain(domain: DomainConfig, service: DomainService) -> list[str]:
    """Every column the configuration names must be a field of the service's output model."""
    fields = set(service.output_model.model_fields)
    nullable = optional_fields(service.output_model)
    prefix = f"domains.{domain.name}"
    problems: list[str] = []

    def unknown(where: str, columns: list[str]) -> None:
        missing = [c for c in columns if c not in fields]
        if missing:
            problems.append(f"{prefix}.{where}: {missing} not in {_model_name(service.output_model)} fields")

    unknown("target.primary_key", domain.target.primary_key)
    nullable_key = [c for c in domain.target.primary_key if c in nullable]
    if nullable_key:
        problems.append(f"{prefix}.target.primary_key: {nullable_key} are optional in the output model")
    unknown("quality.required_columns", domain.quality.required_columns)
    for i, ref in enumerate(domain.references):
        unknown(f"references.{i}.columns", list(ref.columns.values()))
    if domain.enrichment.enabled:
        unknown("enrichment", [domain.enrichment.name_column, domain.enrichment.id_column])
    return problems


def check_shared_tables(sources: DataSources) -> list[str]:
    """Domains sharing a target table must agree on key and load mode; sharing a reference, on its key."""
    problems: list[str] = []
    targets: dict[str, tuple[str, list[str], str]] = {}
    keys: dict[str, tuple[str, list[str]]] = {}
    for name, domain in sources.domains.items():
        target = domain.target
        seen = targets.setdefault(target.qualified, (name, target.primary_key, target.load_mode.value))
        if seen[1:] != (target.primary_key, target.load_mode.value):
            problems.append(f"domains.{name}.target: {target.qualified} is also loaded by {seen[0]} "
                            f"with primary_key {seen[1]} and load_mode {seen[2]}")
        for i, ref in enumerate(domain.references):
            first = keys.setdefault(ref.qualified, (name, ref.key))
            if first[1] != ref.key:
                problems.append(f"domains.{name}.references.{i}.key: {ref.qualified} is keyed {first[1]} by {first[0]}")
    return problems


def _model_name(model: type[BaseModel]) -> str:
    return model.__name__
