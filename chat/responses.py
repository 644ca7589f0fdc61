"""Writes of the Responses API: a response is a job; a stored one (``store``, the default) is a
turn of a session, so ``previous_response_id`` goes on from where that turn ended.

Chaining from the latest turn of a session adds to it. Chaining from an earlier one (a second
answer to the same response, say), or onto another model, branches: a new session gets the
conversation up to that response, and the new turn goes there, so no chain sees another's turns.
A response that is not stored runs as a completion of its own messages, after the history of
its ``previous_response_id`` if it has one.
"""

import uuid

from django.db import transaction

from autoglm_site.errors import ConflictError, InvalidRequestError, NotFoundError
from tenants import quotas
from tenants.models import ApiKey, Tenant

from . import selectors, services
from .models import ChatJob, ChatSession, Message

RESPONSE_PREFIX = "resp_"


def response_id(job: ChatJob) -> str:
    return f"{RESPONSE_PREFIX}{job.id.hex}"


def response_get(*, tenant: Tenant, response_id: str, param: str | None = None) -> ChatJob:
    """A stored response of this tenant; 404 for any other (another tenant's included)."""
    missing = NotFoundError(f"No response with id '{response_id}'.", param=param)
    try:
        job_id = uuid.UUID(hex=response_id.removeprefix(RESPONSE_PREFIX))
    except ValueError:
        raise missing from None
    job = (
        ChatJob.objects.select_related("session", "assistant_message", "user_message")
        .filter(pk=job_id, tenant=tenant, session__isnull=False, session_deleted_at__isnull=True)
        .first()
    )
    if job is None or "response" not in job.params or job.params["response"].get("deleted"):
        raise missing
    return job


def response_delete(*, tenant: Tenant, response_id: str) -> ChatJob:
    """Forget a stored response: it can no longer be read or chained from. Its turn stays in
    its session, where later responses of its chain still read it."""
    job = response_get(tenant=tenant, response_id=response_id)
    job.params = {**job.params, "response": {**job.params["response"], "deleted": True}}
    job.save(update_fields=["params"])
    return job


def history_until(previous: ChatJob) -> list[Message]:
    """The session's messages up to the previous response's answer."""
    if previous.assistant_message is None:
        if not previous.is_finished:
            raise ConflictError("The previous response is still being generated.")
        raise InvalidRequestError(
            "The previous response has no answer to continue from.",
            param="previous_response_id",
        )
    return list(
        selectors.message_list(
            tenant=previous.tenant, session=previous.session, leaf=previous.assistant_message_id
        )
    )


def _session_for(
    *, tenant: Tenant, api_key: ApiKey | None, model: str, previous: ChatJob | None
) -> ChatSession:
    """The session the new turn goes into: the previous response's, or a branch of it."""
    if previous is None:
        return services.session_create(tenant=tenant, model=model, api_key=api_key)
    # Locked, so that two turns chained from its latest response at once cannot both add to
    # it: the second waits, then finds the first's turn after its response, and branches.
    session = ChatSession.objects.select_for_update().get(pk=previous.session_id)
    history = history_until(previous)
    if (
        session.model == model
        and not session.messages.filter(created_at__gt=history[-1].created_at).exists()
    ):
        return session
    branch = services.session_create(
        tenant=tenant, model=model, title=session.title, params=session.params, api_key=api_key
    )
    parent = None
    for message in history:  # one by one: each a later created_at, so the order is kept
        parent = Message.objects.create(
            tenant=tenant,
            session=branch,
            parent=parent,
            role=message.role,
            content=message.content,
        )
    branch.current_message = parent
    branch.save(update_fields=["current_message"])
    return branch


def response_submit(
    *,
    tenant: Tenant,
    api_key: ApiKey | None,
    model: str,
    messages: list[dict],
    instructions: str,
    previous: ChatJob | None,
    store: bool,
    params: dict,
    trace_id: str = "",
) -> tuple[ChatJob, quotas.Headers]:
    """Queue the job of one response. ``messages`` are the input as a session stores them
    (role and text); ``instructions`` are this response's system prompt only, as OpenAI has
    them (a previous response's are not carried over)."""
    if not store:
        history = [] if previous is None else history_until(previous)
        prompt = [{"role": m.role, "content": m.content} for m in history] + messages
        if instructions:
            prompt.insert(0, {"role": "system", "content": instructions})
        return services.completion_submit(
            tenant=tenant,
            api_key=api_key,
            model=model,
            messages=prompt,
            params=params,
            trace_id=trace_id,
        )
    # One transaction: a turn that is refused (a quota, a full queue) leaves no session or
    # branch behind.
    with transaction.atomic():
        session = _session_for(tenant=tenant, api_key=api_key, model=model, previous=previous)
        services.session_update(session=session, system_prompt=instructions)
        return services.turn_submit(
            tenant=tenant,
            session=session,
            messages=messages,
            params=params,
            api_key=api_key,
            trace_id=trace_id,
        )
