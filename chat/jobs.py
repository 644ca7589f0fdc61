"""The life of a chat job: queued, claimed by a worker, run under its quota budget, ended.

Web views queue and cancel jobs through here; the worker's job runner claims, budgets, finishes
and fails them. Every ending writes a usage row, settles the quota reservation and publishes
the job's final event.
"""

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from autoglm_site import metrics
from autoglm_site.celery import app
from autoglm_site.retrying import retry_through_outage
from tenants import quotas
from tenants.models import ApiKey, Tenant, UsageRecord

from . import events, pipeline, selectors
from .attachments import prompt_content
from .models import ChatJob, ChatSession, Message

logger = logging.getLogger(__name__)

# The Celery task that runs a job, sent by name: the web side never imports the workers.
JOB_RUN_TASK = "workers.chat_job_run"


def model_queue(model: str) -> str:
    """The Celery queue that the workers of ``model`` consume."""
    return f"{settings.AUTOGLM_QUEUE_PREFIX}{model}"


def session_prompt(*, session: ChatSession, history: Iterable[Message]) -> list[dict[str, str]]:
    """The conversation a model answers in a session: its system prompt, then ``history``.

    Admission estimates the prompt from it and the worker generates from it, so both count
    the same messages. A message's attached files follow its text (``prompt_content``).
    """
    messages: list[dict[str, str]] = []
    if session.system_prompt:
        messages.append({"role": "system", "content": session.system_prompt})
    messages.extend(
        {"role": m.role, "content": prompt_content(m.content, m.attachments)} for m in history
    )
    return messages


def job_enqueue(*, job: ChatJob) -> bool:
    """Send the job's message to its model's queue and mark it sent; True when sent.

    Callers do it after commit, and the sweeper (``chat.recovery``) for a job still unsent or
    whose message was lost. The message's task id is the job's id, so the sweeper can find it
    in the queue. A broker that refuses the message leaves the job unsent, in the outbox, for
    the sweeper: the request that made the job has already succeeded, so this never raises.
    """
    queue = job.queue or model_queue(job.model)  # rows from before jobs kept their queue
    try:
        app.send_task(JOB_RUN_TASK, args=[str(job.id)], queue=queue, task_id=str(job.id))
    except (KombuError, RedisError, OSError) as exc:
        logger.warning(
            "job kept in the outbox: the broker refused it",
            extra={"job_id": str(job.id), "error": str(exc)},
        )
        return False
    ChatJob.objects.filter(pk=job.pk, status=ChatJob.Status.QUEUED).update(sent_at=timezone.now())
    return True


def job_cancel(*, job: ChatJob) -> ChatJob:
    """Stop a job: a queued one ends now; a running one stops at the worker's next step.

    The worker keeps the partial answer and ends the job ``cancelled``. Cancelling a finished
    job changes nothing.
    """
    with transaction.atomic():
        cancelled_now = ChatJob.objects.filter(pk=job.pk, status=ChatJob.Status.QUEUED).update(
            status=ChatJob.Status.CANCELLED, finished_at=timezone.now(), finish_reason="cancelled"
        )
        if cancelled_now:
            job.refresh_from_db()
            _job_ended(job)
            final = events.done_event(job, with_message=False)
            transaction.on_commit(lambda: _publish_final(job, final))
    if cancelled_now:
        logger.info("job cancelled while queued", extra={"job_id": str(job.id)})
    else:
        events.cancel_request(job.id)
    job.refresh_from_db()
    return job


def job_start(*, job_id: str, worker: str) -> ChatJob | None:
    """Claim a queued job for running on ``worker``; None when it is not queued: it ended, or
    another message of it was taken first (the sweeper sent it again), and this one is a
    duplicate to drop.

    Each claim counts an attempt; the attempt number is the claim's token: the job's ending is
    written only by the attempt that still holds it (see ``job_finish``).
    """
    # The claim and its read commit together: an outage between them leaves the job queued
    # (the sweeper sends it again), never claimed by a task that is gone.
    with transaction.atomic():
        updated = ChatJob.objects.filter(pk=job_id, status=ChatJob.Status.QUEUED).update(
            status=ChatJob.Status.RUNNING,
            started_at=timezone.now(),
            attempts=F("attempts") + 1,
            worker=worker,
        )
        if not updated:
            return None
        job = ChatJob.objects.select_related("tenant", "api_key", "session", "user_message").get(
            pk=job_id
        )
    try:
        job_lease_renew(job=job, starting=True)
    except RedisError:
        # Redis is down: the run meets the outage at its next Redis call and is queued again
        # then; raising here would leave the job running on a live worker that dropped it.
        logger.warning("job started without taking its slot back", extra={"job_id": job_id})
    return job


def job_still_claimed(*, job: ChatJob) -> bool:
    """Whether the attempt running ``job`` still holds it: False once the sweeper queued it
    again (it took this worker for dead) or it ended; the worker then stops generating."""
    return ChatJob.objects.filter(
        pk=job.pk, status=ChatJob.Status.RUNNING, attempts=job.attempts
    ).exists()


def job_requeue(*, job: ChatJob, why: str) -> bool:
    """Queue again a running job: its worker died (the sweeper calls this), or an outage cut
    it off (its worker does); True when the job was still that attempt's. Its slot is held
    again as a queued one, and a worker runs it from the start."""
    with transaction.atomic():
        requeued = ChatJob.objects.filter(
            pk=job.pk, status=ChatJob.Status.RUNNING, attempts=job.attempts, worker=job.worker
        ).update(status=ChatJob.Status.QUEUED, worker="", queued_at=timezone.now(), sent_at=None)
        if requeued:
            transaction.on_commit(lambda: job_enqueue(job=job))
    if not requeued:
        return False
    logger.warning(
        "job queued again", extra={"job_id": str(job.id), "worker": job.worker, "why": why}
    )
    try:
        job_slot_hold(job=job, seconds=settings.AUTOGLM_QUEUED_LEASE_TTL)
    except RedisError:
        pass  # Redis is down: the sweeper holds the slots again if it comes back empty
    return True


def job_slot_hold(*, job: ChatJob, seconds: int) -> None:
    """Hold the job's concurrency slot again (it was queued again, or Redis lost it). A job
    that ended meanwhile gets it released at once: its settlement may have come before this
    hold, and one that comes after removes the hold itself."""
    scope = {"tenant": job.tenant, "api_key": job.api_key, "job_id": str(job.id)}
    quotas.lease_hold(**scope, seconds=seconds)
    if ChatJob.objects.filter(pk=job.pk, status__in=ChatJob.FINISHED).exists():
        quotas.lease_release(**scope)


def reserved_in_flight(*, tenant: Tenant, api_key: ApiKey | None, since: datetime) -> int:
    """Tokens reserved by the jobs admitted since ``since`` that have not ended: with the
    ledger, the seed of a month counter that Redis lost (``quotas.admit``)."""
    unfinished = ChatJob.objects.filter(tenant=tenant, created_at__gte=since).exclude(
        status__in=ChatJob.FINISHED
    )
    if api_key is not None:
        unfinished = unfinished.filter(api_key=api_key)
    return unfinished.aggregate(total=Sum("reserved_tokens"))["total"] or 0


def job_lease_renew(*, job: ChatJob, starting: bool = False) -> None:
    """Hold the running job's concurrency slot for another lease period.

    The worker calls this while it generates; if it dies, the lease runs out and the slot
    comes back within ``AUTOGLM_LEASE_TTL`` seconds. ``starting`` takes the slot back if the
    queued lease ran out.
    """
    quotas.lease_renew(
        tenant=job.tenant, api_key=job.api_key, job_id=str(job.id), starting=starting
    )


def job_prompt_messages(*, job: ChatJob) -> list[dict[str, str]]:
    """The conversation to answer: the session up to the job's user message, or the
    request's own messages for a completion job."""
    if job.session is None:
        return list(job.params.get("messages", []))
    end = job.user_message_id
    history = selectors.message_list(tenant=job.tenant, session=job.session, leaf=end)
    return session_prompt(session=job.session, history=history)


def job_budget(*, job: ChatJob, prompt_tokens: int, max_tokens: int) -> int:
    """How many tokens the job may generate within what it holds against the quotas.

    Admission reserved an estimate; when the real prompt needs more, the reservation grows if
    the month has room, else the answer is shortened to fit. Raises QuotaExceededError when
    not even one token fits.
    """
    needed = prompt_tokens + max_tokens
    if needed <= job.reserved_tokens:
        return max_tokens
    extra = needed - job.reserved_tokens
    if quotas.extend(tenant=job.tenant, api_key=job.api_key, job_id=str(job.id), extra=extra):
        job.reserved_tokens = needed
        ChatJob.objects.filter(pk=job.pk).update(reserved_tokens=needed)
        return max_tokens
    allowed = job.reserved_tokens - prompt_tokens
    if allowed < 1:
        raise quotas.QuotaExceededError(
            "The monthly token quota has no room for this prompt.", retry_after=0, headers={}
        )
    return allowed


@transaction.atomic
def job_finish(
    *,
    job: ChatJob,
    text: str,
    prompt_tokens: int,
    completion_tokens: int,
    finish_reason: str,
    dropped_messages: int = 0,
    choices: list[dict] | None = None,
    cached_tokens: int = 0,
) -> ChatJob | None:
    """Store the answer (partial when cancelled) and close the job, once even if it ran twice.
    ``choices`` are all of its answers (``n`` > 1), or its one with logprobs; the first one is
    the ``text`` the session keeps. ``cached_tokens`` are the prompt tokens the prefix cache
    held (reported as OpenAI's ``prompt_tokens_details.cached_tokens``; billed like the rest).

    A job whose session was deleted while it ran is closed and billed, its answer not kept.
    Returns None when the job is gone (its tenant was deleted).
    """
    session_alive = _session_lock(job)
    locked = _job_lock(job)
    if locked is None or not _held_by(locked, job.attempts):
        return locked
    cancelled = finish_reason == "cancelled"
    if session_alive and (text or not cancelled):
        locked.assistant_message = Message.objects.create(
            tenant_id=locked.tenant_id,
            session_id=locked.session_id,
            parent_id=locked.user_message_id,
            role=Message.Role.ASSISTANT,
            content=text,
        )
        # The answer ends the branch it answers, unless another branch was chosen meanwhile.
        ChatSession.objects.filter(
            pk=locked.session_id, current_message_id=locked.user_message_id
        ).update(current_message=locked.assistant_message)
    locked.status = ChatJob.Status.CANCELLED if cancelled else ChatJob.Status.SUCCEEDED
    locked.output = _kept_output(locked, text)
    locked.choices = choices if choices and not locked.session_deleted_at else []
    locked.prompt_tokens = prompt_tokens
    locked.completion_tokens = completion_tokens
    locked.cached_tokens = cached_tokens
    locked.finish_reason = finish_reason
    locked.dropped_messages = dropped_messages
    locked.finished_at = timezone.now()
    locked.save()
    _job_ended(locked)
    final = events.done_event(locked)
    transaction.on_commit(lambda: _publish_final(locked, final))
    logger.info(
        "job finished",
        extra={
            "job_id": str(job.id),
            "status": locked.status,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "finish_reason": finish_reason,
        },
    )
    return locked


@transaction.atomic
def job_fail(
    *,
    job: ChatJob,
    reason: str,
    code: ChatJob.ErrorCode = ChatJob.ErrorCode.INTERNAL_ERROR,
    produced: tuple[str, int, int] | None = None,
    only_if_queued: bool = False,
    attempt: int | None = None,
) -> ChatJob | None:
    """Close the job as failed with a reason a client can read and a stable code.

    ``produced`` is what it generated before it failed (a timeout, the engine's death): the
    text already streamed, and its prompt and completion tokens, which are billed. With
    ``only_if_queued`` a job that a worker has started meanwhile is left alone; with
    ``attempt`` (a worker's, or the sweeper's for a dead worker) a job that attempt no longer
    holds is.
    """
    locked = _job_lock(job)
    if locked is None or locked.is_finished:
        return locked
    if only_if_queued and locked.status != ChatJob.Status.QUEUED:
        return locked
    if attempt is not None and not _held_by(locked, attempt):
        return locked
    locked.status = ChatJob.Status.FAILED
    locked.error = reason
    locked.error_code = code
    locked.finished_at = timezone.now()
    fields = ["status", "error", "error_code", "finished_at"]
    if produced is not None:
        locked.output, locked.prompt_tokens, locked.completion_tokens = produced
        locked.output = _kept_output(locked, locked.output)
        fields += ["output", "prompt_tokens", "completion_tokens"]
    locked.save(update_fields=fields)
    _job_ended(locked)
    final = events.error_event(locked)
    transaction.on_commit(lambda: _publish_final(locked, final))
    logger.warning("job failed", extra={"job_id": str(job.id), "reason": reason, "code": code})
    return locked


def job_expire_unstarted(*, job: ChatJob) -> bool:
    """Fail a job that no worker has started within AUTOGLM_QUEUED_LEASE_TTL (its slot has
    lapsed by then): the client waiting on it gets an answer instead of waiting forever, and a
    worker that takes its message later skips it. True when the job is past that bound."""
    limit = settings.AUTOGLM_QUEUED_LEASE_TTL
    queued_at = job.queued_at or job.created_at
    if job.status != ChatJob.Status.QUEUED or timezone.now() - queued_at < timedelta(seconds=limit):
        return False
    job_fail(
        job=job,
        reason=f"No worker took the job within {limit}s; is a worker for the model "
        f"'{job.model}' running?",
        code=ChatJob.ErrorCode.MODEL_UNAVAILABLE,
        only_if_queued=True,
    )
    return True


def _session_lock(job: ChatJob) -> bool:
    """Lock the job's session row before the job's own; False when it has none (any more).

    ``services.session_delete`` locks the session first too, so a deletion and a job's ending
    take turns in one order: the answer is stored before the deletion (and goes with it) or
    not at all, never into a session being deleted.
    """
    if job.session_id is None:
        return False
    return ChatSession.objects.select_for_update().filter(pk=job.session_id).first() is not None


def _kept_output(job: ChatJob, text: str) -> str:
    """What of the answer the job row keeps: nothing once its conversation was deleted."""
    return "" if job.session_deleted_at else text


def _job_lock(job: ChatJob) -> ChatJob | None:
    """The job's row, locked for its ending (None when it is gone)."""
    return (
        ChatJob.objects.select_for_update(of=("self",))
        .select_related("tenant", "api_key")
        .filter(pk=job.pk)
        .first()
    )


def _held_by(locked: ChatJob, attempt: int) -> bool:
    """Whether the running job is still the ``attempt`` that claimed it. A worker taken for
    dead whose job was queued again, and that finishes after all, writes nothing: the job's
    ending belongs to the attempt running it now."""
    held = locked.status == ChatJob.Status.RUNNING and locked.attempts == attempt
    if not held and not locked.is_finished:
        logger.warning(
            "result of a superseded attempt dropped",
            extra={"job_id": str(locked.id), "attempt": attempt, "now": locked.attempts},
        )
    return held


def _job_ended(job: ChatJob) -> None:
    """Every ending writes a usage row and, after commit, settles the quota reservation."""
    prompt, completion = job.prompt_tokens or 0, job.completion_tokens or 0
    latency = (job.finished_at - job.created_at).total_seconds() * 1000 if job.finished_at else 0
    _, first_ending = UsageRecord.objects.get_or_create(
        job_id=job.id,
        defaults={
            "tenant_id": job.tenant_id,
            "api_key_id": job.api_key_id,
            "model": job.model,
            "status": job.status,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "latency_ms": max(0, int(latency)),
        },
    )
    settlement = {
        "tenant": job.tenant,
        "api_key": job.api_key,
        "job_id": str(job.id),
        "reserved": job.reserved_tokens,
        "actual": prompt + completion,
        "admitted_at": job.created_at,
        "ended_at": job.finished_at,
    }
    transaction.on_commit(
        lambda: _when_redis_answers("settlement", str(job.id), lambda: quotas.settle(**settlement))
    )
    if first_ending:
        transaction.on_commit(lambda: _count_ending(job))
        transaction.on_commit(lambda: pipeline.job_ended(job))


def _count_ending(job: ChatJob) -> None:
    metrics.REQUESTS_FINISHED.labels(model=job.model, finish_reason=job.ending_reason).inc()
    tenant = job.tenant.slug
    metrics.PROMPT_TOKENS.labels(model=job.model, tenant=tenant).inc(job.prompt_tokens or 0)
    metrics.GENERATION_TOKENS.labels(model=job.model, tenant=tenant).inc(job.completion_tokens or 0)


def _publish_final(job: ChatJob, final: tuple) -> None:
    _when_redis_answers("final event", str(job.id), lambda: events.publish(job.id, *final))


def _when_redis_answers(what: str, job_id: str, write: Callable[[], object]) -> None:
    """Run a job's after-commit Redis write (its settlement, its final event) now or, while
    Redis is unreachable, in the background for up to AUTOGLM_FINAL_WRITE_RETRY_S; both are
    idempotent. The job's ending is stored already and must not fail for this."""
    try:
        write()
    except RedisError as exc:
        logger.warning(
            f"{what} deferred: Redis unavailable", extra={"job_id": job_id, "error": str(exc)}
        )
        threading.Thread(
            target=_retry_in_background, args=(what, job_id, write), daemon=True
        ).start()


def _retry_in_background(what: str, job_id: str, write: Callable[[], object]) -> None:
    try:
        retry_through_outage(write, errors=(RedisError,))
    except RedisError:
        logger.error(f"{what} given up: Redis unavailable", extra={"job_id": job_id})
