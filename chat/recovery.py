"""Recovery: a job never stays stuck because its worker died or its broker message was lost.

Each worker process beats a Redis key with a TTL (``chat.worker_registry``). The sweeper (``sweep``)
runs in the workers, one at a time (``sweep_turn``), every AUTOGLM_SWEEP_INTERVAL seconds:

1. A job ``running`` on a worker whose key has been gone for AUTOGLM_WORKER_TTL is queued
   again, or, once it has been claimed AUTOGLM_MAX_ATTEMPTS times (a job that kills its
   worker), failed as ``worker_crashed``.
2. A job ``queued`` for AUTOGLM_WORKER_TTL whose message is not in its queue is sent again:
   it was never sent (the broker refused it: the outbox), Redis lost it (a restart without
   persistence), or a worker took it and died before claiming it. A message a worker holds
   is claimed within milliseconds (prefetch is one per thread), so it never counts as lost.
   A duplicate message is harmless: only a queued job is claimed (``jobs.job_start``).
3. After Redis lost its data, the concurrency slots of the jobs in flight are held again
   (month counters reseed themselves at the next admission, ``quotas.admit``).

The broker's visibility timeout stays as a backstop only.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from autoglm_site.redisconn import broker_client, redis_client

from . import events, jobs
from .models import ChatJob
from .worker_registry import WORKER_KEY, prune_gone_workers

logger = logging.getLogger(__name__)

# worker id -> when the sweeper first found its key gone (epoch seconds). Lost with Redis's
# data, which only delays a verdict: no live worker is taken for dead because Redis restarted.
MISSING_KEY = "autoglm:workers:missing"
SWEEP_TURN_KEY = "autoglm:sweeper"
# Set once and never expired: when it is gone, Redis lost its data.
EPOCH_KEY = "autoglm:redis:epoch"

_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def sweep_turn(*, worker: str) -> bool:
    """Whether ``worker`` runs this round's sweep (the first to ask in each interval)."""
    interval = settings.AUTOGLM_SWEEP_INTERVAL
    return bool(redis_client().set(SWEEP_TURN_KEY, worker, nx=True, ex=interval))


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    leases_restored: int = 0

    def __bool__(self) -> bool:
        return bool(
            self.requeued or self.crashed or self.cancelled or self.resent or self.leases_restored
        )


def sweep() -> SweepReport:
    """One round of recovery (see the module's docstring)."""
    report = SweepReport()
    report.leases_restored = _restore_after_data_loss()
    prune_gone_workers()
    _recover_dead_workers_jobs(report)
    _resend_lost_messages(report)
    if report:
        logger.warning(
            "sweeper recovered jobs",
            extra={
                "requeued": report.requeued,
                "worker_crashed": report.crashed,
                "cancelled": report.cancelled,
                "resent": report.resent,
                "leases_restored": report.leases_restored,
            },
        )
    return report


# -- 1. jobs of dead workers -------------------------------------------------------------------


def _recover_dead_workers_jobs(report: SweepReport) -> None:
    running = list(
        ChatJob.objects.filter(status=ChatJob.Status.RUNNING).select_related("tenant", "api_key")
    )
    dead = _dead_workers({job.worker for job in running})
    for job in running:
        if job.worker not in dead:
            continue
        if events.cancel_requested(job.id):
            # Cancelled (or its session deleted) while it ran: it ends, not runs again.
            jobs.job_finish(
                job=job, text="", prompt_tokens=0, completion_tokens=0, finish_reason="cancelled"
            )
            report.cancelled.append(str(job.id))
        elif job.attempts >= settings.AUTOGLM_MAX_ATTEMPTS:
            jobs.job_fail(
                job=job,
                reason=f"The job's worker stopped while running it {job.attempts} times; "
                "it is not run again.",
                code=ChatJob.ErrorCode.WORKER_CRASHED,
                attempt=job.attempts,
            )
            report.crashed.append(str(job.id))
        elif jobs.job_requeue(job=job, why="its worker died"):
            report.requeued.append(str(job.id))


def _dead_workers(workers: set[str]) -> set[str]:
    """The workers among ``workers`` whose key has been gone for AUTOGLM_WORKER_TTL."""
    client = redis_client()
    ordered = sorted(workers)
    with client.pipeline(transaction=False) as pipe:
        for worker in ordered:
            pipe.exists(WORKER_KEY.format(worker))
        alive = pipe.execute()
    now = time.time()
    missing = {worker for worker, up in zip(ordered, alive, strict=True) if not up}
    first_missed = client.hgetall(MISSING_KEY)
    # Forget workers that are back or have no running job left.
    stale = [worker for worker in first_missed if worker not in missing]
    if stale:
        client.hdel(MISSING_KEY, *stale)
    dead = set()
    for worker in missing:
        since = first_missed.get(worker)
        if since is None:
            client.hsetnx(MISSING_KEY, worker, now)
        elif now - float(since) >= settings.AUTOGLM_WORKER_TTL:
            dead.add(worker)
    return dead


# -- 2. queued jobs without a message ----------------------------------------------------------


def _resend_lost_messages(report: SweepReport) -> None:
    bound = timezone.now() - timedelta(seconds=settings.AUTOGLM_WORKER_TTL)
    waiting = list(
        ChatJob.objects.filter(status=ChatJob.Status.QUEUED, queued_at__lt=bound).only(
            "id", "model", "queue", "sent_at", "status"
        )
    )
    by_queue: dict[str, list[ChatJob]] = defaultdict(list)
    for job in waiting:
        if job.sent_at is None or job.sent_at < bound:
            by_queue[job.queue or jobs.model_queue(job.model)].append(job)
    for queue, candidates in by_queue.items():
        present = _ids_in_queue(queue)
        for job in candidates:
            if str(job.id) not in present and jobs.job_enqueue(job=job):
                report.resent.append(str(job.id))


def _ids_in_queue(queue: str) -> set[str]:
    """The job ids of the messages waiting in ``queue`` (each message's task id is its job's
    id). The queue is read in slices, so a long one costs no single huge reply."""
    client = broker_client()
    found: set[str] = set()
    start, step = 0, 1000
    while True:
        messages = client.lrange(queue, start, start + step - 1)
        for message in messages:
            found.update(match.decode() for match in _UUID.findall(message))
        if len(messages) < step:
            return found
        start += step


# -- 3. Redis lost its data --------------------------------------------------------------------


def _restore_after_data_loss() -> int:
    """Hold again the slots of the jobs in flight when Redis comes back empty; how many."""
    if not redis_client().set(EPOCH_KEY, str(time.time()), nx=True):
        return 0
    in_flight = ChatJob.objects.exclude(status__in=ChatJob.FINISHED).select_related(
        "tenant", "api_key"
    )
    restored = 0
    for job in in_flight:
        queued = job.status == ChatJob.Status.QUEUED
        ttl = settings.AUTOGLM_QUEUED_LEASE_TTL if queued else settings.AUTOGLM_LEASE_TTL
        jobs.job_slot_hold(job=job, seconds=ttl)
        restored += 1
    return restored
