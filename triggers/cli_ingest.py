"""`coremachine ingest`: run the generic ingestion job over named domains, with a summary table per domain."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console

from core.models import JobStatus
from services.ingestion.report import summary_rows
from triggers.cli_display import fitted_table
from triggers.cli_output import bounded_float, bounded_int
from triggers.cli_run import run_job
from triggers.runtime import Runtime

EXIT_OK, EXIT_FAILED = 0, 1
COLUMNS = {"domain": "domain", "files": "files", "input": "in", "output": "out", "rejected": "rejected",
           "skipped": "skipped", "unknown_names": "unknown", "quality": "quality", "table": "table", "rows": "rows",
           "replaced": "replaced"}
TITLES = {"plan only": "plan only: nothing written", "loaded": "loaded",
          "not loaded": "not loaded: the run failed, the warehouse is unchanged"}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ingest", help="validate Excel workbooks of data domains and (with --execute) load them")
    p.add_argument("--domain", dest="domains", action="append", required=True, metavar="DOMAIN",
                   help="a domain of config/data_sources.yml; repeat for more")
    p.add_argument("--max-files", type=bounded_int(1), default=None, help="at most N files per domain")
    p.add_argument("--period", default=None, help="YYYY-MM: only files of this period")
    p.add_argument("--sheet", default=None, help="read this sheet instead of the configured one")
    p.add_argument("--execute", action="store_true", help="load the warehouse (default: plan only, write nothing)")
    p.add_argument("--rerun", action="store_true",
                   help="run again over unchanged inputs: a new round of the same job, its history kept")
    p.add_argument("--concurrency", type=bounded_int(1), default=2, help="task threads (default 2)")
    p.add_argument("--timeout", type=bounded_float(0.001), default=3600.0, help="seconds to wait before giving up")


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"domains": args.domains, "execute": args.execute}
    for key in ("max_files", "period", "sheet"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    return params


def run(args: argparse.Namespace, runtime: Runtime, console: Console) -> int:
    params = parameters(args)
    if args.rerun and not _rerun(runtime, console, params):
        return EXIT_FAILED
    snapshot = run_job(runtime, console, "ingest", params, args.concurrency, args.timeout)
    if snapshot is None:
        return EXIT_FAILED
    result = snapshot.job.result or {}
    rows = summary_rows(result)
    if rows:
        mode = str(result.get("mode", "plan only"))
        title = f"ingest ({TITLES.get(mode, mode)})"
        cells = [[_cell(row.get(c)) for c in COLUMNS] for row in rows]
        console.print(fitted_table(title, list(COLUMNS.values()), cells, console.width))
    for key, path in result.get("files", {}).items():
        console.print(f"{key}: {path}", highlight=False, soft_wrap=True)
    failed = {n: e["quality"] for n, e in result.get("domains", {}).items()
              if (e.get("quality") or {}).get("passed") is False}
    if snapshot.job.status is not JobStatus.COMPLETED and failed:
        console.print(json.dumps(failed, indent=2, default=str)[:3000])
    return EXIT_OK if snapshot.job.status is JobStatus.COMPLETED else EXIT_FAILED


def _rerun(runtime: Runtime, console: Console, params: dict[str, Any]) -> bool:
    """Submit; when these inputs already have a job that ended, start its next round (`CoreMachine.rerun`)."""
    submitted = runtime.engine.submit("ingest", params)
    if submitted.created or not submitted.job.status.terminal:
        return True
    outcome = runtime.engine.rerun(submitted.job.job_id)
    if not outcome.accepted:
        console.print(f"[red]rerun refused:[/] {outcome.message}", highlight=False, soft_wrap=True)
        return False
    console.print(f"job {submitted.job.job_id}: round {outcome.round} started over the same inputs",
                  highlight=False, soft_wrap=True)
    return True


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)[:40]
    return str(value)
