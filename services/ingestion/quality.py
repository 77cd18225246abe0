"""The quality gate: a domain's rules checked against its staged records and per-file counts.

Rules (from `quality:` in data_sources.yml): every file readable, required columns never null, primary key
unique across all accumulated files, and row-count drift (source rows that did not become records) within
tolerance. A failing rule fails the job before anything is loaded.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from services.ingestion import staging as st
from services.ingestion.config import DomainConfig
from services.ingestion.warehouse import Warehouse

DUPLICATE_SAMPLE = 10


def _check(rule: str, passed: bool, detail: str, **data: Any) -> dict[str, Any]:
    return {"rule": rule, "passed": passed, "detail": detail, **data}


def null_counts(
    db: Warehouse, staging: st.StagingTable, job_id: str, columns: list[str]
) -> dict[str, int]:
    if not columns:
        return {}
    counts = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE {} IS NULL)").format(sql.Identifier(c)) for c in columns
    )
    row = db.conn.execute(db.q("null_counts", counts=counts, table=staging.identifier), (job_id,)).fetchone()
    return {c: int(v) for c, v in zip(columns, row or [0] * len(columns), strict=True)}


def duplicate_keys(
    db: Warehouse, staging: st.StagingTable, job_id: str, key: list[str]
) -> list[dict[str, Any]]:
    statement = db.q("duplicate_keys", key=sql.SQL(", ").join(sql.Identifier(k) for k in key),
                      table=staging.identifier)
    rows = db.conn.execute(statement, (job_id, DUPLICATE_SAMPLE)).fetchall()
    return [{**{k: str(v) for k, v in zip(key, row[:-1], strict=True)}, "copies": int(row[-1])} for row in rows]


def evaluate(
    domain: DomainConfig, summary: dict[str, Any], nulls: dict[str, int], duplicates: list[dict[str, Any]]
) -> dict[str, Any]:
    rules = domain.quality
    checks = []
    file_errors = summary.get("file_errors", [])
    checks.append(_check(
        "files_readable", not file_errors or rules.allow_file_errors,
        f"{len(file_errors)} file(s) could not be read" if file_errors else "all files read",
        files=[e["file"] for e in file_errors],
    ))
    bad_nulls = {c: n for c, n in nulls.items() if n}
    checks.append(_check(
        "required_columns", not bad_nulls,
        f"null values in {bad_nulls}" if bad_nulls else f"{len(nulls)} column(s) always present",
    ))
    if rules.unique_key:
        checks.append(_check(
            "unique_key", not duplicates,
            f"{len(duplicates)}+ key(s) appear more than once across files" if duplicates else "every key unique",
            duplicates=duplicates,
        ))
    source_rows = int(summary.get("input", 0)) - int(summary.get("skipped", 0))
    output = int(summary.get("output", 0))
    drift = (source_rows - output) / source_rows if source_rows > 0 else 0.0
    checks.append(_check(
        "row_count_drift", drift <= rules.max_drift,
        f"{output} of {source_rows} source rows became records (drift {drift:.1%}, tolerance {rules.max_drift:.1%})",
        drift=round(drift, 6),
    ))
    failed = [c["rule"] for c in checks if not c["passed"]]
    return {"domain": domain.name, "passed": not failed, "failed": failed, "checks": checks}
