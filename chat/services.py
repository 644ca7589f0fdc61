"""Writes of chat data: sessions, messages and the life of a chat job."""

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from autoglm_site.errors import ModelNotFoundError
from tenants.models import ApiKey, Tenant

from .models import ChatJob, ChatSession, Message

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
    api_key: ApiKey | None = None,
) -> ChatSession:
    """Start a conversation on ``model`` (the default model when none is given)."""
    model = model_check(model=model or settings.AUTOGLM_DEFAULT_MODEL, api_key=api_key)
    return ChatSession.objects.create(
        tenant=tenant, model=model, title=title, system_prompt=system_prompt
    )


@transaction.atomic
def message_submit(
    *,
    tenant: Tenant,
    session: ChatSession,
    content: str,
    params: dict[str, Any],
    api_key: ApiKey | None = None,
    trace_id: str = "",
) -> ChatJob:
    """Store the user's message and queue a job to answer it.

    The job is sent to the model's queue only after the transaction commits, so a worker never
    looks for a row that is not there yet.
    """
    model_check(model=session.model, api_key=api_key)
    message = Message.objects.create(
        tenant=tenant, session=session, role=Message.Role.USER, content=content
    )
    job = ChatJob.objects.create(
        tenant=tenant,
        session=session,
        api_key=api_key,
        model=session.model,
        params=params,
        user_message=message,
        trace_id=trace_id,
    )
    ChatSession.objects.filter(pk=session.pk).update(updated_at=timezone.now())
    transaction.on_commit(lambda: job_enqueue(job=job))
    logger.info("job queued", extra={"job_id": str(job.id), "model": job.model})
    return job


def job_enqueue(*, job: ChatJob) -> None:
    from workers.tasks import chat_job_run  # Celery task module; it never imports torch.

    chat_job_run.apply_async(args=[str(job.id)], queue=model_queue(job.model))


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
    return ChatJob.objects.select_related("session", "user_message").get(pk=job_id)


def job_prompt_messages(*, job: ChatJob) -> list[dict[str, str]]:
    """The conversation up to the job's user message, as chat-template messages."""
    messages: list[dict[str, str]] = []
    if job.session.system_prompt:
        messages.append({"role": "system", "content": job.session.system_prompt})
    history = Message.objects.filter(session=job.session).order_by("created_at", "id")
    if job.user_message is not None:
        history = history.filter(created_at__lte=job.user_message.created_at)
    messages.extend({"role": m.role, "content": m.content} for m in history)
    return messages


@transaction.atomic
def job_succeed(
    *,
    job: ChatJob,
    text: str,
    prompt_tokens: int,
    completion_tokens: int,
    finish_reason: str,
) -> ChatJob:
    """Store the answer and close the job, exactly once even if the job ran twice."""
    locked = ChatJob.objects.select_for_update().get(pk=job.pk)
    if locked.is_finished:
        return locked
    message = Message.objects.create(
        tenant_id=job.tenant_id,
        session_id=job.session_id,
        role=Message.Role.ASSISTANT,
        content=text,
    )
    locked.assistant_message = message
    locked.status = ChatJob.Status.SUCCEEDED
    locked.prompt_tokens = prompt_tokens
    locked.completion_tokens = completion_tokens
    locked.finish_reason = finish_reason
    locked.finished_at = timezone.now()
    locked.save()
    logger.info(
        "job succeeded",
        extra={
            "job_id": str(job.id),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
        },
    )
    return locked


@transaction.atomic
def job_fail(*, job: ChatJob, reason: str) -> ChatJob:
    """Close the job as failed with a reason a client can read."""
    locked = ChatJob.objects.select_for_update().get(pk=job.pk)
    if locked.is_finished:
        return locked
    locked.status = ChatJob.Status.FAILED
    locked.error = reason
    locked.finished_at = timezone.now()
    locked.save(update_fields=["status", "error", "finished_at"])
    logger.warning("job failed", extra={"job_id": str(job.id), "reason": reason})
    return locked
