"""Reads of chat data. Every lookup is scoped by tenant: another tenant's id is "not found"."""

import uuid

from django.db import connection
from django.db.models import Q, QuerySet

from autoglm_site.errors import InvalidRequestError, NotFoundError
from tenants.models import Tenant

from .models import ChatJob, ChatSession, Message


def _as_uuid(value) -> uuid.UUID | None:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None


def session_get(*, tenant: Tenant, session_id) -> ChatSession:
    """The tenant's session with this id; a missing or foreign id raises the same 404."""
    pk = _as_uuid(session_id)
    session = ChatSession.objects.filter(tenant=tenant, pk=pk).first() if pk else None
    if session is None:
        raise NotFoundError(f"No session with id {session_id!s}.", code="not_found")
    return session


def session_list(
    *, tenant: Tenant, archived: bool | None = None, tag: str | None = None
) -> QuerySet[ChatSession]:
    """The tenant's sessions, newest first; only the archived (or not) ones, or those tagged
    ``tag`` (exactly), when asked."""
    sessions = ChatSession.objects.filter(tenant=tenant)
    if archived is not None:
        sessions = sessions.filter(archived=archived)
    if tag is not None:
        sessions = _tagged(sessions, tag)
    return sessions.order_by("-created_at", "-id")


def _tagged(sessions: QuerySet[ChatSession], tag: str) -> QuerySet[ChatSession]:
    if connection.vendor == "postgresql":
        return sessions.filter(tags__contains=[tag])  # jsonb containment (@>)
    # SQLite (the embedded default) has no JSON containment: match the few rows in Python.
    ids = [pk for pk, tags in sessions.values_list("id", "tags") if tag in (tags or [])]
    return sessions.filter(pk__in=ids)


def message_tree(*, tenant: Tenant, session: ChatSession) -> QuerySet[Message]:
    """Every message of the session, on every branch, oldest first (each names its parent)."""
    return Message.objects.filter(tenant=tenant, session=session).order_by("created_at", "id")


def message_list(*, tenant: Tenant, session: ChatSession, leaf=None) -> QuerySet[Message]:
    """The branch shown: the messages from the first one to ``leaf`` (by default the session's
    current message), oldest first. A conversation that never branched is all its messages,
    so clients that know nothing of branches see the history they always saw."""
    ids = message_path_ids(tenant=tenant, session=session, leaf=leaf)
    return Message.objects.filter(pk__in=ids).order_by("created_at", "id")


def message_path_ids(*, tenant: Tenant, session: ChatSession, leaf=None) -> list:
    """Ids from the first message to ``leaf`` (a message id of the session; by default its
    current message, else its newest). A foreign or unknown ``leaf`` is a 404."""
    parents = dict(
        Message.objects.filter(tenant=tenant, session=session).values_list("id", "parent_id")
    )
    if leaf is not None:
        pk = _as_uuid(leaf)
        if pk not in parents:
            raise NotFoundError(f"No message with id {leaf!s} in this session.", code="not_found")
    else:
        pk = session.current_message_id
        if pk not in parents:
            newest = message_tree(tenant=tenant, session=session).values_list("id", flat=True)
            pk = newest.last()
    path = []
    while pk is not None and len(path) <= len(parents):  # the bound: never loop on a cycle
        path.append(pk)
        pk = parents.get(pk)
    return path[::-1]


def message_get(*, tenant: Tenant, session: ChatSession, message_id, param: str) -> Message:
    """The session's message with this id; a missing or foreign id is a 404 naming ``param``."""
    pk = _as_uuid(message_id)
    message = Message.objects.filter(tenant=tenant, session=session, pk=pk).first() if pk else None
    if message is None:
        raise NotFoundError(
            f"No message with id {message_id!s} in this session.", code="not_found", param=param
        )
    return message


def newest_leaf(message: Message) -> Message:
    """The end of the newest branch under ``message`` (itself when it has no replies): where
    a click on another version of a message takes the conversation."""
    while True:
        child = message.children.order_by("-created_at", "-id").first()
        if child is None:
            return message
        message = child


def job_get(*, tenant: Tenant, job_id) -> ChatJob:
    """The tenant's job with this id; a missing or foreign id raises the same 404, and so does
    the job of a deleted session (its row is kept only to bill it)."""
    pk = _as_uuid(job_id)
    jobs = ChatJob.objects.select_related("assistant_message").filter(
        tenant=tenant, session_deleted_at__isnull=True
    )
    job = jobs.filter(pk=pk).first() if pk else None
    if job is None:
        raise NotFoundError(f"No job with id {job_id!s}.", code="not_found")
    return job


def page(queryset: QuerySet, *, after=None, limit: int, newest_first: bool) -> tuple[list, bool]:
    """One page of rows ordered by (created_at, id), starting after the row ``after``.

    A cursor rather than an offset, so rows added while a client pages do not shift pages.
    Returns the rows and whether more follow.
    """
    order = ("-created_at", "-id") if newest_first else ("created_at", "id")
    queryset = queryset.order_by(*order)
    if after is not None:
        pk = _as_uuid(after)
        anchor = queryset.filter(pk=pk).values("created_at", "id").first() if pk else None
        if anchor is None:
            raise InvalidRequestError(f"No item with id {after!s} in this list.", param="after")
        op = "lt" if newest_first else "gt"
        queryset = queryset.filter(
            Q(**{f"created_at__{op}": anchor["created_at"]})
            | Q(created_at=anchor["created_at"], **{f"id__{op}": anchor["id"]})
        )
    rows = list(queryset[: limit + 1])
    return rows[:limit], len(rows) > limit


def session_latest_job(*, tenant: Tenant, session: ChatSession) -> ChatJob | None:
    """The session's most recent job (the one a reloaded page may have to resume)."""
    return ChatJob.objects.filter(tenant=tenant, session=session).order_by("-created_at").first()


def session_stopped_message_ids(*, tenant: Tenant, session: ChatSession) -> set:
    """Ids of the session's answers that were stopped (cancelled, partial answer kept)."""
    return set(
        ChatJob.objects.filter(
            tenant=tenant,
            session=session,
            status=ChatJob.Status.CANCELLED,
            assistant_message__isnull=False,
        ).values_list("assistant_message_id", flat=True)
    )


def job_queue_position(job: ChatJob) -> int | None:
    """1 for the next job its model's workers take, and so on; None once it is not queued.

    Counts the model's queued jobs created before it (all tenants share a model's queue, and
    only the count is told).
    """
    if job.status != ChatJob.Status.QUEUED:
        return None
    ahead = ChatJob.objects.filter(
        model=job.model, status=ChatJob.Status.QUEUED, created_at__lt=job.created_at
    ).count()
    return ahead + 1


def answer_details(*, tenant: Tenant, session: ChatSession) -> dict:
    """Per answer of the session (its message id): the model, tokens, time to first token and
    finish reason of the job that wrote it. An answer that was continued has several jobs: the
    first one's model and wait, the last one's prompt and finish reason, every one's completion
    tokens."""
    jobs = (
        ChatJob.objects.filter(tenant=tenant, session=session)
        .filter(Q(assistant_message__isnull=False) | Q(continued_message__isnull=False))
        .order_by("created_at", "id")
        .only(
            "model",
            "status",
            "prompt_tokens",
            "completion_tokens",
            "finish_reason",
            "created_at",
            "first_token_at",
            "assistant_message_id",
            "continued_message_id",
        )
    )
    details: dict = {}
    for job in jobs:
        message_id = job.assistant_message_id or job.continued_message_id
        seen = details.get(message_id)
        completion = job.completion_tokens or 0
        if seen is None:
            details[message_id] = {
                "model": job.model,
                "prompt_tokens": job.prompt_tokens,
                "completion_tokens": completion,
                "ttft_ms": job.ttft_ms,
                "finish_reason": job.finish_reason,
            }
            continue
        if job.status == ChatJob.Status.FAILED or job.prompt_tokens is None:
            continue  # a continuation that wrote nothing (it failed, or never started)
        seen["completion_tokens"] += completion
        seen["prompt_tokens"] = job.prompt_tokens
        seen["finish_reason"] = job.finish_reason
    return details
