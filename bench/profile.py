"""Profiling helpers for `bench/fanout.py --profile DIR`: where does the time of a fan-out go?

Views written to DIR (PHASE is `fanout` or `jobs`):
- `workers.txt`: the worker processes' cProfile stats (wall clock, every `coremachine-*` thread, merged over
  both workers and the whole worker lifetime: warm-up, fan-out and the many-jobs phase);
- `statements-PHASE.txt`: server-side time per named query of `infrastructure/postgres/sql/queries/*.sql` (plus
  BEGIN/COMMIT), from `log_min_duration_statement = 0`, during that phase only;
- `activity-PHASE.txt`: what the worker backends were doing, sampled from `pg_stat_activity` every 10 ms
  (state, wait event, statement) — waiting for the WAL flush, for a row lock, for the client, or on CPU;
- `tables-PHASE.json`: live/dead tuples, updates and autovacuum counts of the engine's tables after the phase;
- `explain.txt`: EXPLAIN (ANALYZE, BUFFERS) of the hot statements, on the cluster as the run left it, inside a
  transaction that is rolled back.
"""

from __future__ import annotations

import json
import pstats
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import psycopg
from psycopg import ClientCursor
from psycopg.types.json import Jsonb

from bench.cluster import BenchCluster
from core.models import StagePlan
from core.states import LEASED_TASK, WORKING_JOB, claim_sources, values
from core.store import LEASE_TAKEN_BACK
from infrastructure.postgres.sql_queries import load_queries

PROFILE_SERVER_OPTIONS = {
    "log_min_duration_statement": "0",
    "track_io_timing": "on",
    "track_wal_io_timing": "on",
    "log_checkpoints": "on",
    "log_autovacuum_min_duration": "0",
}

_LOG_START = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \S+ \[(?P<pid>\d+)\] (?P<level>[A-Z]+):\s+(?P<rest>.*)$"
)
_DURATION = re.compile(
    r"^duration: (?P<ms>[\d.]+) ms\s+(?P<phase>statement|execute|parse|bind)(?: [^:]*)?: (?P<sql>.*)$", re.DOTALL
)


# --- naming statements ----------------------------------------------------------------------------------------


def _normalize(text: str, placeholder: str) -> str:
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    flat = " ".join(" ".join(lines).split())
    cut = flat.find(placeholder)
    return (flat if cut < 0 else flat[:cut])[:160]


@dataclass
class StatementNamer:
    """Maps server-logged SQL text back to its `-- name:` in the query files (longest matching prefix)."""

    keys: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys = sorted(
                ((name, _normalize(body.as_string(None), "%(")) for name, body in load_queries().items()),
                key=lambda kv: -len(kv[1]),
            )

    def name(self, logged_sql: str) -> str:
        text = _normalize(logged_sql, "$")
        best, best_len = "", 0
        for name, key in self.keys:
            n = min(len(key), len(text))
            if n > best_len and key[:n] == text[:n] and n >= 12:
                best, best_len = name, n
        return best or text[:70]


# --- server statement log -------------------------------------------------------------------------------------


@dataclass
class StatementStats:
    calls: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    phases: Counter[str] = field(default_factory=Counter)


def _log_records(path: Path, start: int, end: int) -> list[str]:
    with path.open("rb") as handle:
        handle.seek(start)
        text = handle.read(max(0, end - start)).decode("utf-8", errors="replace")
    records: list[str] = []
    for line in text.splitlines():
        if _LOG_START.match(line):
            records.append(line)
        elif records:
            records[-1] += "\n" + line
    return records


def statement_table(path: Path, start: int, end: int) -> dict[str, StatementStats]:
    """Server time per statement name in the log between byte offsets `start` and `end`.
    A statement's parse, bind and execute durations are summed; `calls` counts executions."""
    namer = StatementNamer()
    stats: dict[str, StatementStats] = defaultdict(StatementStats)
    for record in _log_records(path, start, end):
        head = _LOG_START.match(record.split("\n", 1)[0])
        if head is None or head.group("level") != "LOG":
            continue
        body = record[head.start("rest"):]
        match = _DURATION.match(body)
        if match is None:
            continue
        ms, phase = float(match.group("ms")), match.group("phase")
        entry = stats[namer.name(match.group("sql"))]
        entry.total_ms += ms
        entry.max_ms = max(entry.max_ms, ms)
        entry.phases[phase] += 1
        if phase in ("statement", "execute"):
            entry.calls += 1
    return dict(stats)


def format_statement_table(stats: dict[str, StatementStats], per: int) -> str:
    total = sum(s.total_ms for s in stats.values()) or 1.0
    lines = [f"{'statement':<40} {'calls':>8} {'total ms':>10} {'share':>6} {'mean ms':>8} {'max ms':>8} "
             f"{'ms/task':>8}"]
    for name, s in sorted(stats.items(), key=lambda kv: -kv[1].total_ms):
        mean = s.total_ms / s.calls if s.calls else 0.0
        lines.append(f"{name[:40]:<40} {s.calls:>8} {s.total_ms:>10.1f} {s.total_ms / total:>6.1%} {mean:>8.3f} "
                     f"{s.max_ms:>8.2f} {s.total_ms / per:>8.3f}")
    return "\n".join(lines)


# --- pg_stat_activity sampling ----------------------------------------------------------------------------------


class ActivitySampler:
    """Samples the other client backends of one database every `interval` seconds."""

    def __init__(self, url: str, interval: float = 0.01) -> None:
        self._url = url
        self._interval = interval
        self._stop = threading.Event()
        self.samples: Counter[tuple[str, str, str]] = Counter()
        self.ticks = 0
        self._namer = StatementNamer()
        self._thread = threading.Thread(target=self._run, name="bench-activity", daemon=True)

    def start(self) -> ActivitySampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            conn.execute("SET application_name = 'bench-activity'")
            while not self._stop.wait(self._interval):
                rows = conn.execute(
                    "SELECT state, coalesce(wait_event_type || ':' || wait_event, 'CPU'), query"
                    " FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname = current_database()"
                    " AND pid <> pg_backend_pid() AND application_name NOT LIKE 'bench-%%'"
                    " AND state IS DISTINCT FROM 'idle'"
                ).fetchall()
                self.ticks += 1
                for state, wait, query in rows:
                    self.samples[(state or "?", wait, self._namer.name(query or ""))] += 1

    def report(self) -> str:
        total = sum(self.samples.values()) or 1
        lines = [f"{self.ticks} samples; non-idle worker backends per sample: {total / max(1, self.ticks):.2f}",
                 f"{'share':>6}  {'state':<20} {'wait':<28} statement"]
        for (state, wait, name), n in self.samples.most_common(40):
            lines.append(f"{n / total:>6.1%}  {state:<20} {wait:<28} {name}")
        by_wait: Counter[str] = Counter()
        for (_, wait, _), n in self.samples.items():
            by_wait[wait] += n
        lines.append("\nby wait event:")
        lines += [f"{n / total:>6.1%}  {wait}" for wait, n in by_wait.most_common()]
        return "\n".join(lines)


# --- table statistics -----------------------------------------------------------------------------------------


def table_stats(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT relname, n_live_tup, n_dead_tup, n_tup_upd, n_tup_hot_upd, autovacuum_count, autoanalyze_count,"
            " pg_total_relation_size(relid) FROM pg_stat_user_tables"
            " WHERE relname IN ('tasks', 'queue_messages', 'stages', 'jobs', 'job_events') ORDER BY relname"
        ).fetchall()
    keys = ("table", "live", "dead", "updates", "hot_updates", "autovacuums", "autoanalyzes", "bytes")
    return [dict(zip(keys, row, strict=True)) for row in rows]


# --- EXPLAIN ANALYZE of the hot statements -----------------------------------------------------------------------


def explain_hot_statements(cluster: BenchCluster, batch: int = 16) -> str:
    """Plans and timings of one batch's statements on a fresh 1,000-task stage, rolled back afterwards."""
    from bench.measure import FANOUT_JOB, bench_runtime

    out = StringIO()
    queries = load_queries()
    with bench_runtime(cluster.url, cluster.root) as runtime:
        job = runtime.engine.submit(FANOUT_JOB, {"tasks": 1000, "label": "explain"}).job
        definition = runtime.engine.jobs.get(FANOUT_JOB)
        stage = definition.stage(1)
        from core.jobs import PreviousResults

        specs = definition.build_tasks(stage, job.parameters, PreviousResults(0))
        runtime.store.start_stage(
            StagePlan(job.job_id, 1, stage.name, specs, stage.max_attempts, stage.timeout_seconds)
        )
    settings = {"sources": values(claim_sources()), "job_sources": values(WORKING_JOB),
                "leased": values(LEASED_TASK)}

    with psycopg.connect(cluster.url, cursor_factory=ClientCursor) as conn:
        cur = conn.cursor()
        cur.execute("SELECT 1")  # opens the outer transaction; everything below is rolled back at the end

        def explain(name: str, params: dict[str, Any]) -> None:
            """Two plans: the custom one (parameters as literals, what the first executions on a connection get)
            and the generic one (what psycopg's prepared statement gets after 5 executions when PostgreSQL's
            plan_cache_mode=auto judges it no worse) — each run for real inside a savepoint."""
            if name not in queries:
                out.write(f"===== {name} — no such query any more\n\n")
                return
            text = queries[name].as_string(None)
            missing = sorted(set(_PARAM.findall(text)) - set(params))
            if missing:  # the query changed since this profile was written: say so instead of failing the run
                out.write(f"===== {name} — skipped: parameters {missing} not supplied here\n\n")
                return
            try:
                with conn.transaction(force_rollback=True):  # a savepoint, undone: no EXPLAIN changes the next
                    cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + text, params)
                    plan = "\n".join(r[0] for r in cur.fetchall())
            except psycopg.Error as exc:
                plan = f"(failed: {type(exc).__name__}: {exc})"
            out.write(f"===== {name} — custom plan\n{plan}\n\n")
            positional, names = _positional(text)
            statement = f"bench_generic_{name}"
            try:
                with conn.transaction(force_rollback=True):
                    cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                    cur.execute(f"PREPARE {statement} AS {positional}")
                    args = ", ".join(["%s"] * len(names))
                    cur.execute(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE {statement}({args})", [params[n] for n in names])
                    plan = "\n".join(r[0] for r in cur.fetchall())
            except psycopg.Error as exc:
                plan = f"(failed: {type(exc).__name__}: {exc})"
            finally:
                if _prepared(cur, statement):
                    cur.execute(f"DEALLOCATE {statement}")
            out.write(f"===== {name} — generic plan\n{plan}\n\n")

        claim_params = {"queue": "tasks", "limit": batch, "lock_seconds": 60.0, "max_deliveries": 10}
        explain("queue_claim", claim_params)
        cur.execute(queries["queue_claim"].as_string(None), claim_params)
        cols = [d.name for d in cur.description or ()]
        claimed = [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
        task_ids = [r["body"]["task_id"] for r in claimed if r["kind"] == "message"]
        out.write(f"(claimed {len(task_ids)} messages for the statements below)\n\n")
        explain("select_job", {"job_id": job.job_id})
        claim = {"task_ids": task_ids, "worker_id": "bench-explain", "sources": settings["sources"],
                 "job_sources": settings["job_sources"], "leased": settings["leased"],
                 "taken_back": Jsonb(LEASE_TAKEN_BACK), "lease_seconds": 60.0}
        explain("claim_tasks", claim)
        cur.execute(queries["claim_tasks"].as_string(None), claim)
        attempts = {row[0]: row[7] for row in cur.fetchall()}
        ids = list(attempts)
        explain("complete_tasks", {"task_ids": ids, "attempts": [attempts[i] for i in ids],
                                   "results": [Jsonb({}) for _ in ids]})
        explain("decrement_stages", {"job_ids": [job.job_id], "stages": [1], "done": [len(ids)], "failed": [0]})
        explain("insert_events", {"events": Jsonb([{"job_id": job.job_id, "kind": "bench", "stage": 1, "task_id": None,
                                                            "detail": {}, "checked": False}])})
        explain("queue_acknowledge", {  # the batch's settlement, in the outcomes' commit
            "ids": [r["id"] for r in claimed], "lock_tokens": [r["lock_token"] for r in claimed],
        })
        explain("stage_progress", {"job_id": job.job_id})
        conn.rollback()
    return out.getvalue()


_PARAM = re.compile(r"%\((\w+)\)s")


def _positional(text: str) -> tuple[str, list[str]]:
    """`%(name)s` placeholders → `$1, $2, ...` (for PREPARE), and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _PARAM.sub(number, text), names


def _prepared(cur: psycopg.Cursor[Any], statement: str) -> bool:
    row = cur.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = %s", (statement,)).fetchone()
    return bool(row and row[0])


# --- worker cProfile -----------------------------------------------------------------------------------------


def pstats_report(files: Sequence[Path], limit: int = 45) -> str:
    existing = [str(f) for f in files if f.exists()]
    if not existing:
        return "no worker profiles were written\n"
    out = StringIO()
    stats = pstats.Stats(existing[0], stream=out)
    for extra in existing[1:]:
        stats.add(extra)
    stats.strip_dirs()
    out.write(f"merged: {', '.join(existing)}\n\n===== by cumulative time (wall clock, summed over threads)\n")
    stats.sort_stats("cumulative").print_stats(limit)
    out.write("\n===== by own time\n")
    stats.sort_stats("tottime").print_stats(limit)
    return out.getvalue()


@dataclass
class _Phase:
    name: str
    units: int
    log_start: int
    log_end: int = 0
    activity: ActivitySampler | None = None
    tables: list[dict[str, Any]] = field(default_factory=list)


class PhaseProfiler:
    """Records server-side views of named phases of a run; does nothing when `directory` is None."""

    def __init__(self, cluster: BenchCluster, directory: Path | None) -> None:
        self._cluster = cluster
        self.directory = directory
        self._phases: list[_Phase] = []

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def configure_server(self) -> None:
        if self.enabled:
            self._cluster.set_options(PROFILE_SERVER_OPTIONS)

    @contextmanager
    def phase(self, name: str, units: int) -> Iterator[None]:
        """Statement log window, pg_stat_activity samples and table statistics of one phase (`units` = the
        tasks or jobs the per-unit figures divide by)."""
        if not self.enabled:
            yield
            return
        record = _Phase(name, units, self._cluster.log_path.stat().st_size)
        record.activity = ActivitySampler(self._cluster.url).start()
        try:
            yield
        finally:
            record.activity.stop()
            record.log_end = self._cluster.log_path.stat().st_size
            record.tables = table_stats(self._cluster.url)
            self._phases.append(record)

    def write(self) -> dict[str, Any]:
        """Write every view to the directory (workers must have stopped, so their profiles exist)."""
        if self.directory is None:
            return {}
        directory = self.directory
        directory.mkdir(parents=True, exist_ok=True)
        summary: dict[str, Any] = {"directory": str(directory)}
        for record in self._phases:
            stats = statement_table(self._cluster.log_path, record.log_start, record.log_end)
            (directory / f"statements-{record.name}.txt").write_text(
                f"server time per statement during phase {record.name!r} ({record.units} units; "
                "log_min_duration_statement = 0)\n\n" + format_statement_table(stats, record.units) + "\n"
            )
            if record.activity is not None:
                (directory / f"activity-{record.name}.txt").write_text(record.activity.report() + "\n")
            (directory / f"tables-{record.name}.json").write_text(json.dumps(record.tables, indent=2) + "\n")
            top = sorted(stats.items(), key=lambda kv: -kv[1].total_ms)[:8]
            summary[f"{record.name}_statement_ms_per_unit"] = {
                name: round(s.total_ms / record.units, 4) for name, s in top
            }
        (directory / "workers.txt").write_text(pstats_report(sorted(directory.glob("worker-*.prof"))))
        (directory / "explain.txt").write_text(explain_hot_statements(self._cluster))
        return summary
