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
from typing import Any, Protocol

import pandas as pd
import psycopg
from psycopg import sql

from services.ingestion import runtime, staging
from services.ingestion.config import CompanyReference, DomainConfig, EnrichmentConfig
from services.ingestion.models import DataSource, EnrichmentStats, UnknownName
from services.ingestion.queries import query, table


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

    conn: psycopg.Connection[Any]
    reference: CompanyReference
    schema: str
    job_id: str
    domain: str

    def lookup(self, names: list[str]) -> dict[str, str]:
        ref = self.reference
        if not names:
            return {}
        found: dict[str, str] = {}
        if staging.table_columns(self.conn, ref.db_schema, ref.table):
            statement = query(
                "lookup_names", table=table(ref.db_schema, ref.table),
                name_column=sql.Identifier(ref.name_column), id_column=sql.Identifier(ref.id_column),
            )
            found.update((str(n), str(i)) for n, i in self.conn.execute(statement, (names,)) if i is not None)
        pending = [n for n in names if n not in found]
        if pending:
            cached = query("lookup_provider_ids", table=table(self.schema, staging.PROVIDER_IDS))
            found.update(self.conn.execute(cached, (self.job_id, self.domain, pending)).fetchall())
        return found

    def remember(self, ids: dict[str, str]) -> None:
        if not ids:
            return
        statement = query("remember_provider_id", table=table(self.schema, staging.PROVIDER_IDS))
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(statement, [(self.job_id, self.domain, n, i) for n, i in ids.items()])


@dataclass
class PgBudget:
    """The run's external-lookup budget, shared by every task of the job through one guarded row."""

    conn: psycopg.Connection[Any]
    schema: str
    job_id: str
    domain: str
    limit: int

    def take(self, wanted: int) -> int:
        if wanted <= 0 or self.limit <= 0:
            return 0
        target = table(self.schema, staging.LOOKUP_BUDGET)
        with self.conn.transaction():
            self.conn.execute(query("ensure_budget", table=target), (self.job_id, self.domain))
            row = self.conn.execute(query("lock_budget", table=target), (self.job_id, self.domain)).fetchone()
            used = int(row[0]) if row else 0
            granted = max(0, min(wanted, self.limit - used))
            if granted:
                self.conn.execute(query("set_budget", table=target), (used + granted, self.job_id, self.domain))
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
    schema = runtime.settings().staging_schema
    try:
        with runtime.connection() as conn:
            staging.ensure_base_tables(conn, schema)
            budget = PgBudget(conn, schema, source.job_id, config.name, settings.lookup_budget)
            reference = PgReference(conn, settings.reference, schema, source.job_id, config.name)
            yield CompanyEnricher(settings, reference, provider, budget)
    finally:
        close = getattr(provider, "close", None)
        if callable(close):
            close()
