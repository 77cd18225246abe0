"""`bench/fanout.py --quick` runs end to end and prints one JSON object with every figure (no timing thresholds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

POSITIVE = (
    "fanout_tasks_per_s",
    "fanout_s",
    "jobs_per_s",
    "jobs_s",
    "job_latency_p50_s",
    "job_latency_p99_s",
    "create_100k_tasks_s",
    "create_100k_store_s",
    "commit_ceiling_per_s",
    "fanout_vs_ceiling",
    "peak_rss_mb",
    "ingest_rows_per_s",
    "excel_read_floor_rows_per_s",
    "ingest_vs_read_floor",
    "excel_read_floor_2proc_rows_per_s",
    "ingest_s",
    "ingest_peak_rss_mb",
    "ingest_1m_peak_rss_mb",
    "idle_job_latency_p50_ms",
    "idle_job_latency_p99_ms",
    "create_1m_tasks_s",
    "fanout_1m_tasks_per_s",
    "fanout_1m_vs_10k",
    "status_ms_100k_task_job",
    "history_fanout_slowdown",
    "history_status_slowdown",
)


def test_quick_bench_prints_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fanout.py"), "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=540,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(done.stdout)

    for key in POSITIVE:
        assert isinstance(figures[key], int | float) and figures[key] > 0, (key, figures.get(key))
    assert figures["job_latency_p50_s"] <= figures["job_latency_p99_s"]
    assert figures["fanout_vs_ceiling"] == pytest.approx(
        figures["per_run"][0]["fanout_tasks_per_s"] / figures["per_run"][0]["commit_ceiling_per_s"]
    )
    assert figures["runs"] == 1 and len(figures["per_run"]) == 1
    assert figures["quick"] is True
    assert figures["cpu_count"] >= 1
    assert figures["workers"] == 2 and figures["concurrency_per_worker"] >= 1
    sizes = figures["sizes"]
    assert sizes["fanout_tasks"] > 0 and sizes["jobs"] > 0 and sizes["create_tasks"] > 0
    assert sizes["job_stages"] == 2 and sizes["job_tasks_per_stage"] > 0
    assert figures["server"]["fsync"] == "on" and figures["server"]["synchronous_commit"] == "on"
    assert set(figures["targets_met"]) == {
        "fanout_vs_ceiling", "create_100k_tasks_s", "peak_rss_mb", "ingest_vs_read_floor", "jobs_per_s",
        "job_latency_p50_s", "idle_job_latency_p50_ms", "idle_job_latency_p99_ms", "create_1m_tasks_s",
        "fanout_1m_vs_10k", "status_ms_100k_task_job", "history_fanout_slowdown", "history_status_slowdown",
        "ingest_1m_peak_rss_mb",
    }
    assert figures["idle_job_latency_p50_ms"] <= figures["idle_job_latency_p99_ms"]
    history = figures["history_slowdown"]
    assert history["finished_tasks"] == sizes["history_tasks"] > 0
    assert figures["history_fanout_slowdown"] == pytest.approx(
        history["fanout_tasks_per_s_empty"] / history["fanout_tasks_per_s_history"])
    assert figures["ingest_vs_read_floor"] == pytest.approx(
        figures["per_run"][0]["ingest_rows_per_s"] / figures["per_run"][0]["excel_read_floor_rows_per_s"]
    )
    assert sizes["ingest_rows"] > 0 and sizes["ingest_workbooks"] > 0
    rows = figures["ingest_rows"]
    assert rows["generated"] == sizes["ingest_rows"]
    assert 0 < rows["output"] == rows["loaded"] <= rows["input"]
    assert set(figures["ingest_stage_s"]) == {"discover", "process", "references", "quality", "load", "finalize"}
    big = figures["ingest_1m_rows"]
    assert big["rows"] == sizes["ingest_big_rows"] > 0 and 0 < big["loaded"] <= big["rows"]
