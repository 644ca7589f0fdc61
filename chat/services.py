"""Writes of chat data: sessions and their messages, and the admission of the jobs that
answer them (the jobs' own life is in ``chat.jobs``)."""

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from autoglm_site import metrics
from autoglm_site.errors import (
    ConflictError,
    InvalidRequestError,
    ModelNotFoundError,
    NotFoundError,
    RetryLaterError,
)
from autoglm_site.outbound import check_outbound_url
from tenants import quotas
from tenants.models import ApiKey, Tenant

from . import jobs, pipeline, selectors
from .attachments import attachments_fit_check, files_as_messages, messages_with_files
from .capacity import admission_check
from .models import ChatJob, ChatSession, Message
from .tokens import decode_tokens, estimate_prompt_tokens

logger = logging.getLogger(__name__)


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
    current_message: Message | None = None,
    pinned: bool | None = None,
    archived: bool | None = None,
    tags: list[str] | None = None,
) -> ChatSession:
    """Rename, pin, archive or tag a session, change its system prompt or default parameters,
    or show another branch (``current_message``, one of its messages). ``None`` leaves a field
    as it is."""
    changed = {
        "title": title,
        "system_prompt": system_prompt,
        "params": params,
        "current_message": current_message,
        "pinned": pinned,
        "archived": archived,
        "tags": tags,
    }
    changed = {name: value for name, value in changed.items() if value is not None}
    for name, value in changed.items():
        setattr(session, name, value)
    # Only what changed: a concurrent change of another field is not written over.
    session.save(update_fields=[*changed, "updated_at"])
    return session


@transaction.atomic
def session_delete(*, session: ChatSession) -> None:
    """Delete a session with its messages, stopping any job still generating.

    Its jobs are not deleted but detached and marked: to the API they are gone with the session
    (404), but a job still generating must end and write the usage row that bills it. Their
    answers are cleared, as the conversation's messages are. The session's row is locked first,
    as ``jobs.job_finish`` locks it before storing an answer, so the two take turns.
    """
    if ChatSession.objects.select_for_update().filter(pk=session.pk).first() is None:
        return  # deleted meanwhile by another request
    for job in session.jobs.exclude(status__in=ChatJob.FINISHED):
        jobs.job_cancel(job=job)
    session.jobs.update(session_deleted_at=timezone.now(), output="")
    session.delete()


# ``parent`` left out: a new message follows the session's current message.
CURRENT = object()


def message_submit(
    *,
    tenant: Tenant,
    session: ChatSession,
    content: str,
    params: dict[str, Any],
    api_key: ApiKey | None = None,
    trace_id: str = "",
    callback_url: str = "",
    parent: Any = CURRENT,
    attachments: list[dict[str, str]] | None = None,
) -> tuple[ChatJob, quotas.Headers]:
    """Store the user's message and queue a job to answer it; returns the job and the
    rate-limit headers for the response. ``callback_url`` is told when the job ends (a
    signed webhook, ``tenants.webhooks``); it must pass the outbound URL check.
    ``attachments`` are text files sent with it (``[{"name", "text"}]``, checked by
    ``chat.attachments``); a message whose files cannot fit the model's context is refused.

    Parameters the request leaves out come from the session's defaults, then the server's.
    The request is admitted against the quotas first (nothing is stored if it is refused), then
    refused with 409 if an answer is still being generated in the session. The job is sent to
    the model's queue only after the transaction commits, so a worker never looks for a row
    that is not there yet.

    ``parent`` is the id of the message it follows (None: a new first message), so posting
    after an earlier message starts a branch, as editing a message does; left out, it follows
    the session's current message. The new message becomes the current one.
    """
    return turn_submit(
        tenant=tenant,
        session=session,
        messages=[
            {"role": Message.Role.USER, "content": content, "attachments": attachments or []}
        ],
        params=params,
        api_key=api_key,
        trace_id=trace_id,
        callback_url=callback_url,
        parent=parent,
    )


def turn_submit(
    *,
    tenant: Tenant,
    session: ChatSession,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    api_key: ApiKey | None = None,
    trace_id: str = "",
    callback_url: str = "",
    parent: Any = CURRENT,
) -> tuple[ChatJob, quotas.Headers]:
    """``message_submit`` for a turn of one or more messages (user text, tool results: the
    Responses API's input items), stored in order, each following the one before; the job
    answers the last of them."""
    model_check(model=session.model, api_key=api_key)
    history = _history_before(tenant=tenant, session=session, parent=parent)
    if callback_url:
        callback_url = check_outbound_url(callback_url, param="callback_url").url
    params = {**_default_params(), **session.params, **params}
    messages, params = pipeline.before_admission(
        tenant=tenant, model=session.model, messages=files_as_messages(messages), params=params
    )
    messages = messages_with_files(messages)
    # What the plugins made of them (e.g. masked) is stored.
    turn = [
        Message(role=m["role"], content=m["content"], attachments=m.get("attachments") or [])
        for m in messages
    ]
    prompt = jobs.session_prompt(session=session, history=[*history, *turn])
    if turn[-1].attachments:
        attachments_fit_check(model=session.model, prompt=prompt, max_tokens=params["max_tokens"])

    def build() -> ChatJob:
        session_lock_idle(tenant=tenant, session=session)
        previous = history[-1] if history else None
        for message in turn:
            message.tenant, message.session, message.parent = tenant, session, previous
            message.save()
            previous = message
        ChatSession.objects.filter(pk=session.pk).update(
            current_message=previous, updated_at=timezone.now()
        )
        return ChatJob(session=session, user_message=turn[-1], callback_url=callback_url)

    return admit_and_create(
        tenant=tenant,
        api_key=api_key,
        model=session.model,
        params=params,
        prompt=prompt,
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
    messages, params = pipeline.before_admission(
        tenant=tenant, model=model, messages=messages, params={**_default_params(), **params}
    )
    params = {**params, "messages": messages}
    return admit_and_create(
        tenant=tenant,
        api_key=api_key,
        model=model,
        params=params,
        prompt=messages,
        trace_id=trace_id,
        build=ChatJob,
    )


def prompt_submit(
    *,
    tenant: Tenant,
    api_key: ApiKey | None,
    model: str,
    prompt: str | list[int],
    params: dict[str, Any],
    trace_id: str = "",
) -> tuple[ChatJob, quotas.Headers]:
    """Queue a job for a legacy completion: ``prompt`` (text, or token ids) continued as it is,
    without the chat template (``params["prompt"]`` or ``params["prompt_ids"]``).

    The plugins' ``before_admission`` see the prompt as one user message; token ids as their
    text, where this process has the model's tokenizer. What they make of the text (masked,
    say) is what is stored and generated from. Admitted against the quotas first, like
    ``message_submit``.
    """
    model_check(model=model, api_key=api_key)
    text = prompt if isinstance(prompt, str) else decode_tokens(model, prompt)
    messages = [{"role": Message.Role.USER, "content": text or ""}]
    messages, params = pipeline.before_admission(
        tenant=tenant, model=model, messages=messages, params={**_default_params(), **params}
    )
    seen = messages[-1]["content"] if messages else text
    if isinstance(prompt, str) or (text is not None and seen != text):
        params, estimate = {**params, "prompt": seen}, None
    else:
        params, estimate = {**params, "prompt_ids": prompt}, len(prompt)
    return admit_and_create(
        tenant=tenant,
        api_key=api_key,
        model=model,
        params=params,
        prompt=[{"role": Message.Role.USER, "content": seen or ""}],
        prompt_tokens=estimate,
        trace_id=trace_id,
        build=ChatJob,
    )


def admit_and_create(
    *,
    tenant: Tenant,
    api_key: ApiKey | None,
    model: str,
    params: dict[str, Any],
    prompt: list[dict[str, str]],
    trace_id: str,
    build: Callable[[], ChatJob],
    prompt_tokens: int | None = None,
) -> tuple[ChatJob, quotas.Headers]:
    """Admit against the quotas, then store the job (made by ``build``) and enqueue it. A model
    that cannot take a job now (no live worker, a full queue: ``chat.capacity``) is refused
    here, before anything is stored or reserved.

    If storing fails after admission, the reservation is given back, so a failed request
    costs nothing. ``prompt_tokens`` is the prompt's size when it is known exactly (token
    ids); else it is estimated from ``prompt``.
    """
    started = time.perf_counter()
    job_id = uuid.uuid4()
    # Each of the n answers may take max_tokens; the prompt is computed once.
    answers = params["max_tokens"] * (params.get("n") or 1)
    if prompt_tokens is None:
        prompt_tokens = estimate_prompt_tokens(model, prompt, params.get("tools"))
    reserve = answers + prompt_tokens
    try:
        admission_check(model=model)
        headers = quotas.admit(
            tenant=tenant,
            api_key=api_key,
            job_id=str(job_id),
            reserve_tokens=reserve,
            reserved_in_flight=jobs.reserved_in_flight,
        )
    except (quotas.RateLimitError, RetryLaterError) as exc:
        metrics.REQUESTS_REJECTED.labels(model=model, tenant=tenant.slug, code=exc.code).inc()
        raise
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
            job.queue = jobs.model_queue(model)
            job.queued_at = timezone.now()
            job.save(force_insert=True)
            transaction.on_commit(lambda: jobs.job_enqueue(job=job))
    except BaseException:
        quotas.settle(
            tenant=tenant, api_key=api_key, job_id=str(job_id), reserved=reserve, actual=0
        )
        raise
    metrics.ADMISSION_TIME.labels(model=model).observe(time.perf_counter() - started)
    logger.info("job queued", extra={"job_id": str(job.id), "model": job.model})
    return job, headers


def _default_params() -> dict[str, Any]:
    return {"max_tokens": settings.AUTOGLM_DEFAULT_MAX_TOKENS, "temperature": 1.0, "top_p": 1.0}


def _history_before(*, tenant: Tenant, session: ChatSession, parent: Any) -> list[Message]:
    """The branch a new turn follows: up to ``parent`` (an id of the session's; None: none),
    or up to the session's current message when ``parent`` is left out."""
    if parent is None:
        return []
    leaf = None
    if parent is not CURRENT:
        leaf = selectors.message_get(
            tenant=tenant, session=session, message_id=parent, param="parent_id"
        ).pk
    return list(selectors.message_list(tenant=tenant, session=session, leaf=leaf))


def session_lock_idle(*, tenant: Tenant, session: ChatSession) -> ChatSession:
    """The session's row, locked until the transaction ends, with no answer being generated in
    it; 409 while one is (a message posted then would interleave with that answer, and be
    answered from a history without it).

    The lock makes two posts to one session at once take turns: the second sees the first's
    job and is refused.
    """
    locked = ChatSession.objects.select_for_update().filter(pk=session.pk, tenant=tenant).first()
    if locked is None:
        raise NotFoundError(f"No session with id {session.pk}.", code="not_found")
    if locked.jobs.exclude(status__in=ChatJob.FINISHED).exists():
        raise ConflictError(
            "An answer is still being generated in this conversation; wait for it to end or "
            "cancel it."
        )
    return locked


@transaction.atomic
def session_regenerate(
    *,
    tenant: Tenant,
    session: ChatSession,
    message_id=None,
    api_key: ApiKey | None = None,
    trace_id: str = "",
) -> tuple[ChatJob, quotas.Headers]:
    """Answer a user message again; the answers it had stay, as earlier versions.

    ``message_id`` is the answer to redo or the user message to answer; by default the last
    user message of the branch shown. The new answer goes on the branch through that message,
    which becomes the current one, with the session's current parameters, admitted and queued
    as any message is (``admit_and_create``). Returns the job and its limit headers.
    """
    session_lock_idle(tenant=tenant, session=session)
    if message_id is not None:
        target = selectors.message_get(
            tenant=tenant, session=session, message_id=message_id, param="message_id"
        )
        question = target.parent if target.role == Message.Role.ASSISTANT else target
    else:
        path = selectors.message_list(tenant=tenant, session=session)
        question = path.filter(role=Message.Role.USER).last()
    if question is None or question.role != Message.Role.USER:
        raise InvalidRequestError("This conversation has no message to answer.")
    model_check(model=session.model, api_key=api_key)
    params = {**_default_params(), **session.params}
    history = list(selectors.message_list(tenant=tenant, session=session, leaf=question.pk))
    # The plugins see the turn answered, as when it was posted (it is stored as they left it).
    turn = files_as_messages(
        [{"role": question.role, "content": question.content, "attachments": question.attachments}]
    )
    _, params = pipeline.before_admission(
        tenant=tenant, model=session.model, messages=turn, params=params
    )

    def build() -> ChatJob:
        ChatSession.objects.filter(pk=session.pk).update(
            current_message=question, updated_at=timezone.now()
        )
        return ChatJob(session=session, user_message=question)

    return admit_and_create(
        tenant=tenant,
        api_key=api_key,
        model=session.model,
        params=params,
        prompt=jobs.session_prompt(session=session, history=history),
        trace_id=trace_id,
        build=build,
    )
