"""Writes of chat data: sessions, messages and the life of a chat job."""

import logging
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from autoglm_site.errors import (
    ConflictError,
    InvalidRequestError,
    ModelNotFoundError,
)
from tenants import quotas
from tenants.models import ApiKey, Tenant, UsageRecord

from . import events, presenters
from .models import ChatJob, ChatSession, Message
from .tokens import estimate_prompt_tokens

logger = logging.getLogger(__name__)


def model_queue(model: str) -> str:
    """The Celery queue that the workers of ``model`` consume."""
    return f"{settings.AUTOGLM_QUEUE_PREFIX}{model}"


def model_check(*, model: str, api_key: ApiKey | None = None, param: str = "model") -> str:
    """Refuse a model that is not configured (or that the key may not use) as 404."""
    if model not in settings.AUTOGLM_MODELS or (api_key and not api_key.allows_model(model)):
        raise ModelNotFoundError(f"The model '{model}' does not exist.", param=param)
    return model


@transaction.atomic
def session_create(
    *,
    tenant: Tenant,
    model: str | None = None,
    title: str = "",
    system_prompt: str = "",
    params: dict[str, Any] | None = None,
    api_key: ApiKey | None = None,
) -> ChatSession:
    """Start a conversation on ``model`` (the default model when none is given).

    ``params`` are the default sampling parameters of the session's messages.
    """
    model = model_check(model=model or settings.AUTOGLM_DEFAULT_MODEL, api_key=api_key)
    return ChatSession.objects.create(
        tenant=tenant, model=model, title=title, system_prompt=system_prompt, params=params or {}
    )


@transaction.atomic
def session_update(
    *,
    session: ChatSession,
    title: str | None = None,
    system_prompt: str | None = None,
    params: dict[str, Any] | None = None,
) -> ChatSession:
    """Rename a session or change its system prompt or default parameters."""
    if title is not None:
        session.title = title
    if system_prompt is not None:
        session.system_prompt = system_prompt
    if params is not None:
        session.params = params
    session.save()
    return session


def session_delete(*, session: ChatSession) -> None:
    """Delete a session with its messages and jobs, stopping any job still generating."""
    for job in session.jobs.exclude(status__in=ChatJob.FINISHED):
        job_cancel(job=job)
    session.delete()


def message_submit(
    *,
    tenant: Tenant,
    session: ChatSession,
    content: str,
    params: dict[str, Any],
    api_key: ApiKey | None = None,
    trace_id: str = "",
) -> tuple[ChatJob, quotas.Headers]:
    """Store the user's message and queue a job to answer it; returns the job and the
    rate-limit headers for the response.

    Parameters the request leaves out come from the session's defaults, then the server's.
    The request is admitted against the quotas first (nothing is stored if it is refused). The
    job is sent to the model's queue only after the transaction commits, so a worker never
    looks for a row that is not there yet.
    """
    model_check(model=session.model, api_key=api_key)
    params = {**_default_params(), **session.params, **params}
    history = [{"role": m.role, "content": m.content} for m in session.messages.all()]
    history.append({"role": "user", "content": content})
    if session.system_prompt:
        history.insert(0, {"role": "system", "content": session.system_prompt})

    def build() -> ChatJob:
        message = Message.objects.create(
            tenant=tenant, session=session, role=Message.Role.USER, content=content
        )
        ChatSession.objects.filter(pk=session.pk).update(updated_at=timezone.now())
        return ChatJob(session=session, user_message=message)

    return _admit_and_create(
        tenant=tenant,
        api_key=api_key,
        model=session.model,
        params=params,
        prompt=history,
        trace_id=trace_id,
        build=build,
    )


def completion_submit(
    *,
    tenant: Tenant,
    api_key: ApiKey | None,
    model: str,
    messages: list[dict[str, str]],
    params: dict[str, Any],
    trace_id: str = "",
) -> tuple[ChatJob, quotas.Headers]:
    """Queue a job for an OpenAI-style completion: the prompt is the request's messages.

    Admitted against the quotas first, like ``message_submit``.
    """
    model_check(model=model, api_key=api_key)
    params = {**_default_params(), **params, "messages": messages}
    return _admit_and_create(
        tenant=tenant,
        api_key=api_key,
        model=model,
        params=params,
        prompt=messages,
        trace_id=trace_id,
        build=ChatJob,
    )


def _admit_and_create(
    *,
    tenant: Tenant,
    api_key: ApiKey | None,
    model: str,
    params: dict[str, Any],
    prompt: list[dict[str, str]],
    trace_id: str,
    build: Callable[[], ChatJob],
) -> tuple[ChatJob, quotas.Headers]:
    """Admit against the quotas, then store the job (made by ``build``) and enqueue it.

    If storing fails after admission, the reservation is given back, so a failed request
    costs nothing.
    """
    job_id = uuid.uuid4()
    reserve = params["max_tokens"] + estimate_prompt_tokens(model, prompt)
    headers = quotas.admit(
        tenant=tenant, api_key=api_key, job_id=str(job_id), reserve_tokens=reserve
    )
    try:
        with transaction.atomic():
            job = build()
            job.id = job_id
            job.model = model
            job.tenant = tenant
            job.api_key = api_key
            job.params = params
            job.trace_id = trace_id
            job.reserved_tokens = reserve
            job.save(force_insert=True)
            transaction.on_commit(lambda: job_enqueue(job=job))
    except BaseException:
        quotas.settle(
            tenant=tenant, api_key=api_key, job_id=str(job_id), reserved=reserve, actual=0
        )
        raise
    logger.info("job queued", extra={"job_id": str(job.id), "model": job.model})
    return job, headers


def _default_params() -> dict[str, Any]:
    return {"max_tokens": settings.AUTOGLM_DEFAULT_MAX_TOKENS, "temperature": 1.0, "top_p": 1.0}


def job_enqueue(*, job: ChatJob) -> None:
    from workers.tasks import chat_job_run  # Celery task module; it never imports torch.

    chat_job_run.apply_async(args=[str(job.id)], queue=model_queue(job.model))


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
            transaction.on_commit(
                lambda: events.publish(
                    job.id,
                    events.DONE,
                    {
                        "status": ChatJob.Status.CANCELLED,
                        "finish_reason": "cancelled",
                        "usage": None,
                    },
                )
            )
    if cancelled_now:
        logger.info("job cancelled while queued", extra={"job_id": str(job.id)})
    else:
        events.cancel_request(job.id)
    job.refresh_from_db()
    return job


def job_start(*, job_id: str) -> ChatJob | None:
    """Claim a job for running; None when it already ended (a redelivery after it finished).

    A job found ``running`` is one whose worker died mid-way and whose message the broker
    redelivered: it is run again from the start.
    """
    updated = ChatJob.objects.filter(
        pk=job_id, status__in=[ChatJob.Status.QUEUED, ChatJob.Status.RUNNING]
    ).update(status=ChatJob.Status.RUNNING, started_at=timezone.now(), attempts=F("attempts") + 1)
    if not updated:
        return None
    job = ChatJob.objects.select_related("tenant", "api_key", "session", "user_message").get(
        pk=job_id
    )
    job_lease_renew(job=job)
    return job


def job_lease_renew(*, job: ChatJob) -> None:
    """Hold the running job's concurrency slot for another lease period.

    The worker calls this while it generates; if it dies, the lease runs out and the slot
    comes back within ``AUTOGLM_LEASE_TTL`` seconds.
    """
    quotas.lease_renew(tenant=job.tenant, api_key=job.api_key, job_id=str(job.id))


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


def _job_ended(job: ChatJob) -> None:
    """Every ending writes a usage row and, after commit, settles the quota reservation."""
    prompt, completion = job.prompt_tokens or 0, job.completion_tokens or 0
    latency = (job.finished_at - job.created_at).total_seconds() * 1000 if job.finished_at else 0
    UsageRecord.objects.get_or_create(
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
    tenant, api_key = job.tenant, job.api_key
    transaction.on_commit(
        lambda: quotas.settle(
            tenant=tenant,
            api_key=api_key,
            job_id=str(job.id),
            reserved=job.reserved_tokens,
            actual=prompt + completion,
        )
    )


def job_prompt_messages(*, job: ChatJob) -> list[dict[str, str]]:
    """The conversation to answer: the session up to the job's user message, or the
    request's own messages for a completion job."""
    if job.session is None:
        return list(job.params.get("messages", []))
    messages: list[dict[str, str]] = []
    if job.session.system_prompt:
        messages.append({"role": "system", "content": job.session.system_prompt})
    history = Message.objects.filter(session=job.session).order_by("created_at", "id")
    if job.user_message is not None:
        history = history.filter(created_at__lte=job.user_message.created_at)
    messages.extend({"role": m.role, "content": m.content} for m in history)
    return messages


@transaction.atomic
def job_finish(
    *,
    job: ChatJob,
    text: str,
    prompt_tokens: int,
    completion_tokens: int,
    finish_reason: str,
    dropped_messages: int = 0,
) -> ChatJob | None:
    """Store the answer (partial when cancelled) and close the job, once even if it ran twice.

    Returns None when the job is gone (its session was deleted while it ran).
    """
    locked = (
        ChatJob.objects.select_for_update(of=("self",))
        .select_related("tenant", "api_key")
        .filter(pk=job.pk)
        .first()
    )
    if locked is None or locked.is_finished:
        return locked
    cancelled = finish_reason == "cancelled"
    if locked.session_id and (text or not cancelled):
        locked.assistant_message = Message.objects.create(
            tenant_id=locked.tenant_id,
            session_id=locked.session_id,
            role=Message.Role.ASSISTANT,
            content=text,
        )
    locked.status = ChatJob.Status.CANCELLED if cancelled else ChatJob.Status.SUCCEEDED
    locked.output = text
    locked.prompt_tokens = prompt_tokens
    locked.completion_tokens = completion_tokens
    locked.finish_reason = finish_reason
    locked.dropped_messages = dropped_messages
    locked.finished_at = timezone.now()
    locked.save()
    _job_ended(locked)
    payload = {
        "status": locked.status,
        "finish_reason": finish_reason,
        "usage": presenters.job_usage(locked),
        "message_id": str(locked.assistant_message_id) if locked.assistant_message_id else None,
    }
    transaction.on_commit(lambda: events.publish(locked.id, events.DONE, payload))
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
    *, job: ChatJob, reason: str, code: str = ChatJob.ErrorCode.INTERNAL_ERROR
) -> ChatJob | None:
    """Close the job as failed with a reason a client can read and a stable code."""
    locked = (
        ChatJob.objects.select_for_update(of=("self",))
        .select_related("tenant", "api_key")
        .filter(pk=job.pk)
        .first()
    )
    if locked is None or locked.is_finished:
        return locked
    locked.status = ChatJob.Status.FAILED
    locked.error = reason
    locked.error_code = code
    locked.finished_at = timezone.now()
    locked.save(update_fields=["status", "error", "error_code", "finished_at"])
    _job_ended(locked)
    error = presenters.job_error(locked)
    transaction.on_commit(
        lambda: events.publish(locked.id, events.ERROR, {"status": "failed", **error})
    )
    logger.warning("job failed", extra={"job_id": str(job.id), "reason": reason, "code": code})
    return locked


@transaction.atomic
def session_regenerate(*, tenant: Tenant, session: ChatSession, trace_id: str = ""):
    """Answer the session's last user message again, replacing the answer it had (if any).

    The last user turn is resubmitted through ``services.message_submit`` with the session's
    current parameters, so admission, quotas and queueing are the API's. If admission refuses,
    the transaction rolls back and the old answer stays. Returns the job and its limit headers.
    """
    session = ChatSession.objects.select_for_update().get(pk=session.pk, tenant=tenant)
    if session.jobs.exclude(status__in=ChatJob.FINISHED).exists():
        raise ConflictError("An answer is still being generated in this conversation.")
    last_user = (
        Message.objects.filter(tenant=tenant, session=session, role=Message.Role.USER)
        .order_by("created_at", "id")
        .last()
    )
    if last_user is None:
        raise InvalidRequestError("This conversation has no message to answer.")
    Message.objects.filter(
        tenant=tenant, session=session, created_at__gte=last_user.created_at
    ).delete()
    return message_submit(
        tenant=tenant,
        session=session,
        content=last_user.content,
        params={},
        api_key=None,
        trace_id=trace_id,
    )
