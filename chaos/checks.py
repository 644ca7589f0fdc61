"""What a chaos run checks, from PostgreSQL and Redis (Django is set up by then)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from django.db import OperationalError, connection

from autoglm_site.redisconn import redis_client
from chat.models import ChatJob, Message
from tenants import quotas, selectors
from tenants.models import ApiKey, Tenant, UsageRecord


@dataclass
class Outcome:
    """One scenario's tally: every count but ``jobs`` and ``statuses`` must be 0."""

    name: str
    jobs: int = 0
    statuses: Counter = field(default_factory=Counter)
    lost: int = 0  # accepted, then gone from the database
    stuck: int = 0  # not in a final state by the deadline
    duplicated: int = 0  # a job with more than one answer
    unbilled: int = 0  # an ended job whose usage row is missing or differs from the job
    leaked: int = 0  # slots still held after every job ended
    overspent: int = 0  # tokens the month counter is short of the ledger, per scope
    wrong: int = 0  # scenario-specific: a cut stream not cancelled, say
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        counts = (self.lost, self.stuck, self.duplicated, self.unbilled, self.leaked)
        return not any(counts) and not self.overspent and not self.wrong


async def session_job(session_id: str) -> str:
    """The id of the session's latest job."""
    job = await ChatJob.objects.filter(session_id=session_id).order_by("-created_at").afirst()
    return str(job.id)


def wait_until_ended(job_ids: list[str], timeout: float) -> float:
    """Seconds it took every job to reach a final state (or the timeout)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        left = ChatJob.objects.filter(pk__in=job_ids).exclude(status__in=ChatJob.FINISHED)
        try:
            if not left.exists():
                break
        except OperationalError:  # our own connection, cut by the PostgreSQL restart
            connection.close()
        time.sleep(1)
    return time.monotonic() - started


def account(outcome: Outcome, job_ids: list[str], tenant: Tenant, key: ApiKey) -> Outcome:
    rows = {str(job.id): job for job in ChatJob.objects.filter(pk__in=job_ids)}
    outcome.jobs = len(job_ids)
    outcome.lost = sum(1 for job_id in job_ids if job_id not in rows)
    outcome.statuses = Counter(
        f"{job.status} ({job.error_code})" if job.error_code else job.status
        for job in rows.values()
    )
    ended = [job for job in rows.values() if job.is_finished]
    outcome.stuck = len(rows) - len(ended)
    for job in [job for job in rows.values() if not job.is_finished][:5]:
        outcome.notes.append(
            f"stuck: {job.id} {job.status} on {job.worker or '-'} (attempt {job.attempts})"
        )
    answers = Counter(
        Message.objects.filter(
            session_id__in=[job.session_id for job in ended if job.session_id],
            role=Message.Role.ASSISTANT,
        ).values_list("session_id", flat=True)
    )
    outcome.duplicated = sum(1 for count in answers.values() if count > 1)
    outcome.duplicated += sum(
        1
        for job in ended
        if job.status == ChatJob.Status.SUCCEEDED and job.session_id and not answers[job.session_id]
    )
    usage = {str(row.job_id): row for row in UsageRecord.objects.filter(job_id__in=rows)}
    for job in ended:
        row = usage.get(str(job.id))
        billed = (row.prompt_tokens, row.completion_tokens) if row else None
        if billed != (job.prompt_tokens or 0, job.completion_tokens or 0):
            outcome.unbilled += 1
    outcome.leaked = held_slots(tenant, key)
    if outcome.leaked:
        outcome.notes.append(f"slots still held by: {held_by(tenant, key)}")
    outcome.overspent = month_shortfall(tenant, key)
    return outcome


def held_by(tenant: Tenant, key: ApiKey) -> list[str]:
    """The jobs holding the live leases, with their state (to find why a slot stayed)."""
    now_ms = int(time.time() * 1000)
    month = quotas._month()
    found = []
    for scope in quotas.scopes_for(tenant, key):
        for job_id, expiry in redis_client().zrangebyscore(
            scope.keys(month).leases, now_ms, "+inf", withscores=True
        ):
            job = ChatJob.objects.filter(pk=job_id).first()
            state = "no job" if job is None else job.status
            if job is not None and job.finished_at:
                state += f", ended {job.finished_at:%H:%M:%S.%f}"
            found.append(f"{job_id} ({state}; lease until {expiry / 1000 - time.time():.0f}s)")
    return found


def held_slots(tenant: Tenant, key: ApiKey, wait_s: float = 5) -> int:
    """Concurrency leases still live for the tenant and its key, once the settlements that
    follow the jobs' last commits have had ``wait_s`` to land."""
    deadline = time.monotonic() + wait_s
    while True:
        now_ms = int(time.time() * 1000)
        month = quotas._month()
        held = sum(
            redis_client().zcount(scope.keys(month).leases, now_ms, "+inf")
            for scope in quotas.scopes_for(tenant, key)
        )
        if not held or time.monotonic() > deadline:
            return held
        time.sleep(0.2)


def month_shortfall(tenant: Tenant, key: ApiKey) -> int:
    """How far the month counters fall short of the ledger, summed over both scopes (a
    counter short of the ledger lets a tenant spend past its quota). A counter Redis lost is
    reseeded from the ledger at the next admission, so it counts as equal."""
    shortfall = 0
    month = quotas._month()
    for scope, api_key in zip(quotas.scopes_for(tenant, key), (None, key), strict=True):
        counter = redis_client().get(scope.keys(month).month)
        ledger = selectors.usage_month(tenant=tenant, api_key=api_key)
        if counter is not None and int(counter) != ledger:
            shortfall += abs(ledger - int(counter))
    return shortfall
