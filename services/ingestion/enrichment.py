"""Company-id enrichment: reference table first, then an optional external provider within a per-run budget.

Names nobody resolves get a deterministic temporary id (`TMP` + hash) and are reported as unknown names.
`open_company_enricher` is the factory: it borrows one warehouse connection, hands out a `CompanyEnricher`
bound to it, and always releases the connection (and closes the provider) when the block ends.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd
from psycopg import sql

from core.errors import ConfigurationError
from services.ingestion import staging
from services.ingestion.config import CompanyReference, DomainConfig, EnrichmentConfig
from services.ingestion.models import DataSource, EnrichmentStats, UnknownName
from services.ingestion.warehouse import Warehouse, table


class CompanyProvider(Protocol):
    """An external lookup (a registry API, say): the company id for a normalised name, or None."""

    def lookup(self, name: str) -> str | None: ...


class ReferenceLookup(Protocol):
    def lookup(self, names: list[str]) -> dict[str, str]:
        """Known ids: the reference table, and what the provider already answered in this run."""
        ...

    def remember(self, ids: dict[str, str]) -> None:
        """Keep the provider's answers for the rest of the run (other files of the same job)."""
        ...


class LookupBudget(Protocol):
    def take(self, wanted: int) -> int:
        """How many of `wanted` external lookups may still be made in this run (0 when spent)."""
        ...


@dataclass(frozen=True, slots=True)
class EnrichmentOutcome:
    ids: dict[str, str]
    stats: EnrichmentStats
    unknown: list[UnknownName] = field(default_factory=list)


class Enricher(Protocol):
    def resolve(self, names: pd.Series) -> EnrichmentOutcome:
        """Ids for every distinct name in `names` (a Series of names indexed by sheet row)."""
        ...


def temporary_id(prefix: str, name: str) -> str:
    return prefix + hashlib.sha256(name.encode("utf-8")).hexdigest()[:10].upper()


@dataclass
class CompanyEnricher:
    settings: EnrichmentConfig
    reference: ReferenceLookup
    provider: CompanyProvider | None
    budget: LookupBudget

    def resolve(self, names: pd.Series) -> EnrichmentOutcome:
        if names.empty:
            return EnrichmentOutcome({}, EnrichmentStats())
        counts = names.value_counts(sort=False)
        first_rows = pd.Series(names.index, index=names.to_numpy()).groupby(level=0).min()
        unique = [str(n) for n in counts.index]
        ids = dict(self.reference.lookup(unique))
        from_reference = len(ids)
        pending = [n for n in unique if n not in ids]
        used, from_provider = 0, 0
        if self.provider is not None and pending:
            used = self.budget.take(len(pending))
            answered: dict[str, str] = {}
            for name in pending[:used]:
                found = self.provider.lookup(name)
                if found:
                    answered[name] = found
            self.reference.remember(answered)
            ids.update(answered)
            from_provider = len(answered)
        unknown = [
            UnknownName(n, temporary_id(self.settings.temporary_id_prefix, n), int(counts[n]), int(first_rows[n]))
            for n in unique
            if n not in ids
        ]
        ids.update({u.name: u.temporary_id for u in unknown})
        stats = EnrichmentStats(
            names=len(unique), from_reference=from_reference, from_provider=from_provider, temporary=len(unknown),
            lookups_used=used, budget_exhausted=self.provider is not None and used < len(pending),
        )
        return EnrichmentOutcome(ids, stats, unknown)


@dataclass
class PgReference:
    """Names → ids from the reference table (if it exists yet), then from this run's provider answers."""

    db: Warehouse
    reference: CompanyReference
    schema: str
    job_id: str
    domain: str

    def lookup(self, names: list[str]) -> dict[str, str]:
        ref = self.reference
        if not names:
            return {}
        found: dict[str, str] = {}
        if staging.table_columns(self.db, ref.db_schema, ref.table):
            statement = self.db.q(
                "lookup_names", table=table(ref.db_schema, ref.table),
                name_column=sql.Identifier(ref.name_column), id_column=sql.Identifier(ref.id_column),
            )
            found.update((str(n), str(i)) for n, i in self.db.conn.execute(statement, (names,)) if i is not None)
        pending = [n for n in names if n not in found]
        if pending:
            cached = self.db.q("lookup_provider_ids", table=table(self.schema, staging.PROVIDER_IDS))
            found.update(self.db.conn.execute(cached, (self.job_id, self.domain, pending)).fetchall())
        return found

    def remember(self, ids: dict[str, str]) -> None:
        if not ids:
            return
        statement = self.db.q("remember_provider_id", table=table(self.schema, staging.PROVIDER_IDS))
        with self.db.conn.transaction(), self.db.conn.cursor() as cur:
            cur.executemany(statement, [(self.job_id, self.domain, n, i) for n, i in ids.items()])


@dataclass
class PgBudget:
    """The run's external-lookup budget, shared by every task of the job through one guarded row."""

    db: Warehouse
    schema: str
    job_id: str
    domain: str
    limit: int

    def take(self, wanted: int) -> int:
        if wanted <= 0 or self.limit <= 0:
            return 0
        target = table(self.schema, staging.LOOKUP_BUDGET)
        with self.db.conn.transaction():
            self.db.conn.execute(self.db.q("ensure_budget", table=target), (self.job_id, self.domain))
            row = self.db.conn.execute(self.db.q("lock_budget", table=target), (self.job_id, self.domain)).fetchone()
            used = int(row[0]) if row else 0
            granted = max(0, min(wanted, self.limit - used))
            if granted:
                self.db.conn.execute(self.db.q("set_budget", table=target), (used + granted, self.job_id, self.domain))
        return granted


def load_provider(dotted: str) -> CompanyProvider:
    """`module:factory` → factory() (a provider object)."""
    module_name, _, attr = dotted.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    provider: CompanyProvider = factory()
    return provider


@contextmanager
def open_company_enricher(config: DomainConfig, source: DataSource) -> Iterator[Enricher]:
    """A `CompanyEnricher` on a borrowed connection; the connection and provider are released afterwards."""
    settings = config.enrichment
    provider = load_provider(settings.provider) if settings.provider else None
    if source.runtime is None:
        raise ConfigurationError("company-id enrichment needs the warehouse: DataSource.runtime is not set")
    schema = source.runtime.settings.staging_schema
    try:
        with source.runtime.warehouse() as db:
            staging.ensure_base_tables(db, schema)
            budget = PgBudget(db, schema, source.job_id, config.name, settings.lookup_budget)
            reference = PgReference(db, settings.reference, schema, source.job_id, config.name)
            yield CompanyEnricher(settings, reference, provider, budget)
    finally:
        close = getattr(provider, "close", None)
        if callable(close):
            close()
