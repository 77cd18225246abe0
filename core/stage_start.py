"""Creating stages: the unit of work that writes planned stages, their tasks and task messages, and starts their jobs
on them (`Store.start_stage`, `Store.start_stages`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from core.ids import task_id_for
from core.messages import StageTaskMessages, tasks_per_message
from core.models import JobStatus, OutgoingMessage, ReceivedMessage, StagePlan
from core.outcomes import stage_done
from core.states import job_sources
from core.uow import GuardFailed, UnitOfWork


def start_one(
    uow: UnitOfWork, plan: StagePlan, inline_finish: frozenset[str], acknowledge: Sequence[ReceivedMessage] = (),
    per_message: int = 1,
) -> bool:
    return start_stages(uow, [plan], inline_finish, acknowledge, per_message)[0]


def start_stages(
    uow: UnitOfWork, plans: Sequence[StagePlan], inline_finish: frozenset[str],
    acknowledge: Sequence[ReceivedMessage] = (), per_message: int = 1,
) -> list[bool]:
    """The stage rows, then the tasks, then the job rows' guarded updates (the lock order), one statement each for
    all the plans, then every task message in one write, and the stage messages `acknowledge` settled. A plan whose
    job is not at that stage, or whose stage exists, writes nothing (its message is settled all the same). A wide
    stage's messages carry up to `per_message` tasks each (`tasks_per_message`)."""
    jobs = uow.read_jobs([p.job_id for p in plans])
    sources = job_sources(JobStatus.PROCESSING)
    wanted: dict[tuple[str, int], StagePlan] = {}
    for plan in plans:  # the first plan of a stage counts; a repeated one (a duplicate message) creates nothing
        job = jobs.get(plan.job_id)
        if (job is not None and job.status in sources and job.current_stage == plan.stage
                and plan.round in (None, job.round)):
            wanted.setdefault((plan.job_id, plan.stage), plan)
    inserted = uow.insert_stages(list(wanted.values())) if wanted else set()
    new = [plan for key, plan in wanted.items() if key in inserted]
    if new:
        uow.insert_tasks(new)
        # Guarded on the round read too: a rerun that reached this stage again meanwhile is another round's.
        started = uow.start_job_stages(sorted((p.job_id, p.stage, jobs[p.job_id].round) for p in new), sources)
        for plan in new:
            if plan.job_id not in started:
                raise GuardFailed(f"job {plan.job_id} left stage {plan.stage} while it was being created")
    messages: list[Sequence[OutgoingMessage]] = []
    for plan in new:
        job = jobs[plan.job_id]
        task_ids = [task_id_for(plan.job_id, plan.stage, i) for i in range(len(plan.tasks))]
        messages.append(StageTaskMessages(
            plan.job_id, job.job_type, plan.stage, task_ids, [spec.task_type for spec in plan.tasks], job.round,
            tasks_per_message(len(plan.tasks), per_message)))
        uow.event(plan.job_id, "stage_started", {"name": plan.stage_name, "tasks": len(plan.tasks)},
                  stage=plan.stage)
        if not plan.tasks:
            stage_done(uow, replace(job, status=JobStatus.PROCESSING), plan.stage, inline_finish)
    # One plan's messages go as they are made (a wide stage's are written while the rest are being made).
    uow.send(messages[0] if len(messages) == 1 else [m for batch in messages for m in batch], fresh=True)
    uow.acknowledge(acknowledge)
    made = {id(plan) for plan in new}
    return [id(plan) in made for plan in plans]
