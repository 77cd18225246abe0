"""A plain answer to "why isn't this job finished?", computed from a snapshot and the job's dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from core.models import DeadLetter, JobSnapshot, JobStatus


def explain(snapshot: JobSnapshot, dead_letters: Sequence[DeadLetter] = (), now: datetime | None = None) -> list[str]:
    """Sentences, most important first. A finished job gets one sentence saying how it ended."""
    now = now or datetime.now(UTC)
    job = snapshot.job
    if job.status.terminal:
        ended = f"Job {job.status.value.replace('_', ' ')}"
        if job.error:
            ended += f": {job.error.get('type', 'error')}: {job.error.get('message', '')}"
        return [ended if ended.endswith(".") else f"{ended}."]
    lines: list[str] = []
    if job.status is JobStatus.QUEUED:
        lines.append("The job is queued: its first stage has not started yet (no worker has taken the job message).")
    elif job.status is JobStatus.FINALIZING:
        outcome = job.outcome.value if job.outcome else "completed"
        lines.append(f"All work is done (outcome {outcome}); the job waits for its finalize step to run.")
    else:
        stage = next((s for s in snapshot.stages if s.stage == job.current_stage), None)
        if stage is None:
            lines.append(f"The job waits for stage {job.current_stage} to start (its stage message is queued).")
        else:
            counts = ", ".join(f"{n} {status}" for status, n in sorted(stage.counts.items())) or "no tasks"
            lines.append(
                f"It waits on stage {stage.stage} of {job.total_stages} ({stage.name}): "
                f"{stage.remaining} of {stage.task_count} tasks unfinished ({counts})."
            )
    running = snapshot.oldest_running
    if running is not None and running.lease_until is not None:
        left = (running.lease_until - now).total_seconds()
        lease = (
            f"lease ends in {left:.0f}s" if left >= 0
            else f"lease expired {-left:.0f}s ago (the janitor takes it back)"
        )
        lines.append(
            f"Oldest running task: {running.task_id} (attempt {running.attempt}/{running.max_attempts}, "
            f"worker {running.claimed_by or '?'}, {lease})."
        )
    retry = snapshot.next_retry
    if retry is not None and retry.not_before is not None:
        wait = max(0.0, (retry.not_before - now).total_seconds())
        last = retry.errors[-1] if retry.errors else {}
        lines.append(
            f"Next scheduled retry: {retry.task_id} attempt {retry.attempt + 1}/{retry.max_attempts} "
            f"in {wait:.1f}s after {last.get('type', 'an error')}: {last.get('message', '')}"
        )
    for dl in dead_letters:
        lines.append(
            f"Dead-lettered message {dl.message_id} (id {dl.id}) on queue {dl.queue}: {dl.reason}: {dl.description}. "
            f"Fix the cause, then `coremachine deadletters replay {dl.id}`."
        )
    return lines
