"""Worker subprocesses for the benchmark, and a sampler of their memory (RSS) and CPU time.

Workers are `python -m bench.worker_proc` processes pointed at the bench cluster by `DATABASE_URL`; `stop()`
sends SIGTERM, waits, then kills whatever is left, so no worker outlives the benchmark.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psutil

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class WorkerFleet:
    """`count` worker processes with `concurrency` task threads each."""

    database_url: str
    count: int
    concurrency: int
    log_dir: Path
    profile_dir: Path | None = None
    log_level: str = "INFO"
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. COREMACHINE_DATA_ROOT for the ingest phase
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def start(self, ready_timeout: float = 60.0) -> None:
        # A developer's COREMACHINE_* / DATABASE_URL must not change what is measured: start from a clean slate.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("COREMACHINE_") and k != "DATABASE_URL"}
        env = {
            **inherited,
            "DATABASE_URL": self.database_url,
            "COREMACHINE_LOG_LEVEL": self.log_level,
            "COREMACHINE_JOB_PACKAGES": "jobs",
            "COREMACHINE_TASK_PACKAGES": "services",
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
            **self.extra_env,
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for i in range(self.count):
            cmd = [sys.executable, "-m", "bench.worker_proc", "--concurrency", str(self.concurrency)]
            if self.profile_dir is not None:
                cmd += ["--profile", str(self.profile_dir / f"worker-{i}.prof")]
            stderr = (self.log_dir / f"worker-{i}.log").open("w")
            try:
                proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
            finally:
                stderr.close()
            self.processes.append(proc)
        deadline = time.monotonic() + ready_timeout
        for i, proc in enumerate(self.processes):
            line = _read_line(proc, max(0.1, deadline - time.monotonic()))
            if not line.startswith("ready"):
                raise RuntimeError(f"worker {i} did not start (exit={proc.poll()}, said {line!r}):\n{self.log_tail(i)}")

    def check(self) -> None:
        """Raise if a worker has exited (so a run fails fast instead of waiting for its timeout)."""
        for i, proc in enumerate(self.processes):
            if proc.poll() is not None:
                raise RuntimeError(f"worker {i} exited with {proc.returncode}:\n{self.log_tail(i)}")

    def log_tail(self, i: int, chars: int = 3000) -> str:
        path = self.log_dir / f"worker-{i}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every worker, wait up to `timeout` seconds, then SIGKILL the rest."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        self.processes = []

    def __enter__(self) -> WorkerFleet:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return proc.stdout.readline().strip()


def _tree(pid: int) -> list[psutil.Process]:
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds so far of these processes and their children."""
    total = 0.0
    for pid in pids:
        for proc in _tree(pid):
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                continue
    return total


class RssSampler:
    """Samples each worker's RSS (its process tree's, children included) every `interval` seconds; `peak_mb`
    is the largest single-worker total seen since `reset()`."""

    def __init__(self, pids: list[int], interval: float = 0.05) -> None:
        self._pids = pids
        self._interval = interval
        self._peaks: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def reset(self) -> None:
        with self._lock:
            self._peaks = {}
        self.sample()

    def sample(self) -> None:
        for pid in self._pids:
            rss = 0
            for proc in _tree(pid):
                try:
                    rss += proc.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            with self._lock:
                self._peaks[pid] = max(self._peaks.get(pid, 0), rss)

    @property
    def peak_mb(self) -> float:
        with self._lock:
            return max(self._peaks.values(), default=0) / 2**20

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()
