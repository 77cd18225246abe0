"""The `coremachine` command on bad input and at its edges: one-line errors, exit codes, JSON that stays JSON.

Most cases call `main()` in-process on a fresh database; the ones about tracebacks, start-up and the embedded
server run the installed command in a subprocess, as a user would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from triggers.cli import main

ROOT = Path(__file__).resolve().parents[2]
JOB_ID = "ab" * 32
DRILLS = {"COREMACHINE_JOB_PACKAGES": "jobs,tests.drills", "COREMACHINE_TASK_PACKAGES": "services,tests.drills"}


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in list(os.environ):
        if name.startswith("COREMACHINE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COREMACHINE_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COREMACHINE_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("COLUMNS", "80")
    yield database_url


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: a new process, the environment given (plus COLUMNS=80)."""
    full_env = {**os.environ, "COLUMNS": "80", **(env or {})}
    return subprocess.run([sys.executable, "-m", "triggers.cli", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {stderr!r}"
    assert "Traceback" not in stderr
    return lines[0]


def job_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM jobs").fetchone()
    assert row is not None
    return int(row[0])


def test_nul_in_a_parameter_is_a_one_line_usage_error_and_creates_nothing(cli_env: str) -> None:
    done = cli("submit", "hello_world", "-p", 'message="a\\u0000b"', env={"DATABASE_URL": cli_env})
    assert done.returncode == 2
    assert one_line_error(done.stderr) == (
        "coremachine: error: invalid parameters for hello_world: message: contains a NUL character")
    assert job_count(cli_env) == 0


def test_unknown_log_level_is_a_usage_error(cli_env: str) -> None:
    done = cli("--log-level", "LOUD", "submit", "hello_world", env={"DATABASE_URL": cli_env})
    assert done.returncode == 2
    assert "invalid choice: 'LOUD'" in one_line_error(done.stderr)


def test_a_bad_setting_in_the_environment_is_one_line(cli_env: str) -> None:
    done = cli("submit", "hello_world", env={"DATABASE_URL": cli_env, "COREMACHINE_LOG_LEVEL": "LOUD"})
    assert done.returncode == 2
    assert one_line_error(done.stderr).startswith("coremachine: error: invalid settings: log_level")


def test_unreachable_database_is_a_one_line_runtime_error_without_the_password(tmp_path: Path) -> None:
    url = "postgresql://someone:s3cret@127.0.0.1:1/nothing?connect_timeout=3"
    done = cli("submit", "hello_world", env={"DATABASE_URL": url, "COREMACHINE_DATA_DIR": str(tmp_path)})
    assert done.returncode == 1
    line = one_line_error(done.stderr)
    assert line.startswith("coremachine: error: cannot connect to the database") and "s3cret" not in line


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    url = "postgresql://someone@127.0.0.1:1/nothing?connect_timeout=3"
    env = {"DATABASE_URL": url, "COREMACHINE_DATA_DIR": str(tmp_path)}
    for args in (("--debug", "status", JOB_ID), ("status", JOB_ID, "--debug")):
        done = cli(*args, env=env)
        assert done.returncode == 1 and "Traceback" in done.stderr
        assert done.stderr.rstrip().splitlines()[-1].startswith("coremachine: error: cannot connect")
    done = cli("status", JOB_ID, env={**env, "COREMACHINE_DEBUG": "1"})
    assert done.returncode == 1 and "Traceback" in done.stderr


def test_run_validates_its_options_before_the_job_exists(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "hello_world", "--concurrency", "0"]) == 2
    assert "--concurrency: must be at least 1, got 0" in one_line_error(capsys.readouterr().err)
    assert main(["run", "hello_world", "-p", "n=-5"]) == 2
    assert "invalid parameters for hello_world" in one_line_error(capsys.readouterr().err)
    assert job_count(cli_env) == 0


def test_status_errors_go_to_stderr_and_stay_json_with_json(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "abc"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "'abc' is not a job id" in one_line_error(out.err)
    assert main(["status", JOB_ID]) == 1
    out = capsys.readouterr()
    assert out.out == "" and one_line_error(out.err) == f"coremachine: error: no job {JOB_ID}"
    assert main(["status", JOB_ID, "--json"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert json.loads(one_line_error(out.err)) == {"error": "not_found", "message": f"no job {JOB_ID}", "details": []}
    assert main(["status", "abc", "--json"]) == 2
    assert json.loads(capsys.readouterr().err)["error"] == "invalid_job_id"


def test_submit_json_and_status_json(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", "hello_world", "-p", "n=2", "--json"]) == 0
    submitted = json.loads(capsys.readouterr().out)
    assert submitted["created"] is True
    assert main(["status", submitted["job_id"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "queued"


def test_janitor_json_is_never_wrapped_and_its_interval_has_a_floor(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COREMACHINE_STUCK_JOB_SECONDS", "0.001")
    for n in (1, 2, 3):  # jobs nobody works on: reported as stuck, which makes the report longer than 80 columns
        assert main(["submit", "hello_world", "-p", f"n={n}"]) == 0
    capsys.readouterr()
    assert main(["janitor", "--once"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and len(lines[0]) > 80
    assert len(json.loads(lines[0])["stuck_jobs"]) == 3
    assert main(["janitor", "--interval", "0"]) == 2
    assert "--interval: must be a number of at least 1" in one_line_error(capsys.readouterr().err)


def test_deadletter_edges(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deadletters", "replay", "abc"]) == 1
    assert "no dead letter matches id abc; nothing to replay" in one_line_error(capsys.readouterr().err)
    assert main(["deadletters", "purge", "--job-id", JOB_ID, "--dry-run"]) == 1
    assert "no dead letter matches" in one_line_error(capsys.readouterr().err)
    assert main(["deadletters", "replay", "1", "--all"]) == 2
    assert "--all means every dead letter" in one_line_error(capsys.readouterr().err)
    assert main(["deadletters", "purge"]) == 2
    assert "name dead letter ids" in one_line_error(capsys.readouterr().err)
    assert main(["deadletters", "list", "--limit", "-1"]) == 2
    assert "--limit: must be at least 1, got -1" in one_line_error(capsys.readouterr().err)
    assert main(["deadletters", "show", "7", "--json"]) == 1
    assert json.loads(capsys.readouterr().err)["error"] == "not_found"
    assert main(["deadletters", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_internal_job_types_are_hidden_from_help_but_runnable_by_name(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["submit", "--help"])
    help_text = capsys.readouterr().out
    assert "hello_world" in help_text and "bench_noop" not in help_text
    assert main(["submit", "nope"]) == 2
    error = one_line_error(capsys.readouterr().err)
    assert "unknown job type 'nope'" in error and "hello_world" in error and "bench_noop" not in error
    assert main(["submit", "bench_noop", "-p", "tasks=1"]) == 0


def test_run_follows_its_own_job_reports_its_own_time_and_keeps_logs_off_the_bar(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", "hello_world", "-p", "n=3", "-p", "message=someone else's job"]) == 0
    other = capsys.readouterr().out.split()[0]
    assert main(["run", "hello_world", "-p", "n=40", "-p", "failure_rate=0.3"]) == 0
    out = capsys.readouterr()
    own = re.search(r"Job ([0-9a-f]{64}) \(submitted\)", out.out)
    assert own is not None and other not in out.out
    assert "Note: 1 other unfinished job(s) share the queues" in out.out.replace("\n", " ")
    took = re.search(r"Job completed in (\d+\.\d\d)s\.", out.out)
    assert took is not None
    with psycopg.connect(cli_env) as conn:
        row = conn.execute("SELECT extract(epoch FROM finished_at - created_at) FROM jobs WHERE job_id = %s",
                           (own.group(1),)).fetchone()
    assert row is not None and f"{float(row[0]):.2f}" == took.group(1), "the time is the job's own, from the store"
    assert not [line for line in out.err.splitlines() if line.startswith("{")], "no JSON log lines on the terminal"
    logs = list((tmp_path / "state" / "logs").glob("hello_world-*.log"))
    assert len(logs) == 1 and str(logs[0].name) in out.out.replace("\n", "")
    assert all(json.loads(line)["level"] in ("WARNING", "ERROR") for line in logs[0].read_text().splitlines())
    assert main(["run", "hello_world", "-p", "n=40", "-p", "failure_rate=0.3"]) == 0
    assert "already exists and is completed; not run again" in capsys.readouterr().out


def test_a_fail_fast_stage_reads_failed_and_the_wording_is_plain(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in DRILLS.items():
        monkeypatch.setenv(name, value)
    assert main(["run", "drill_fail_fast", "-p", "n=4", "-p", "fail_index=0"]) == 1
    out = capsys.readouterr().out
    summary = out[:out.index("Job failed in")]
    assert re.search(r"^\s+1\s+work\s+failed\s+4\s", summary, re.MULTILINE), out
    assert "cancelled" not in summary
    job_id = re.search(r"Job ([0-9a-f]{64})", out).group(1)  # type: ignore[union-attr]
    assert main(["status", job_id]) == 0
    status = capsys.readouterr().out
    assert "Status: failed, stage 1 of 2." in status and "• Job failed: " in status
    assert "is finished" not in status
    assert max(len(line) for line in status.splitlines()) <= 80


def test_db_status_and_stop_for_the_embedded_server(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "", "COREMACHINE_DATA_DIR": str(tmp_path / "state"), "COREMACHINE_LOG_LEVEL": "WARNING"}
    status = json.loads(cli("db", "status", "--json", env=env).stdout)
    assert status["running"] is False and status["initialised"] is False and status["used"] is True
    try:
        first = cli("submit", "hello_world", env=env)
        assert first.returncode == 0, first.stderr
        assert "started the embedded PostgreSQL server" in first.stderr and "coremachine db stop" in first.stderr
        second = cli("submit", "hello_world", env=env)
        assert second.returncode == 0 and "started the embedded" not in second.stderr, "said once, at the start"
        status = json.loads(cli("db", "status", "--json", env=env).stdout)
        assert status["running"] is True and status["size_bytes"] > 1_000_000 and status["url"].startswith("postgres")
        text = cli("db", "status", env=env).stdout
        assert "Embedded server: running" in text and "Data directory:" in text
    finally:
        stopped = cli("db", "stop", env=env)
    assert stopped.returncode == 0 and stopped.stdout.strip() == "Embedded server stopped."
    assert json.loads(cli("db", "status", "--json", env=env).stdout)["running"] is False
    assert cli("db", "stop", env=env).stdout.strip() == "Embedded server is not running."
