"""Reads of chat data. Every lookup is scoped by tenant: another tenant's id is "not found"."""

import uuid

from django.db.models import QuerySet

from autoglm_site.errors import NotFoundError
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


def session_list(*, tenant: Tenant) -> QuerySet[ChatSession]:
    return ChatSession.objects.filter(tenant=tenant).order_by("-created_at", "-id")


def message_list(*, tenant: Tenant, session: ChatSession) -> QuerySet[Message]:
    return Message.objects.filter(tenant=tenant, session=session).order_by("created_at", "id")


def job_get(*, tenant: Tenant, job_id) -> ChatJob:
    """The tenant's job with this id; a missing or foreign id raises the same 404."""
    pk = _as_uuid(job_id)
    job = (
        ChatJob.objects.select_related("assistant_message").filter(tenant=tenant, pk=pk).first()
        if pk
        else None
    )
    if job is None:
        raise NotFoundError(f"No job with id {job_id!s}.", code="not_found")
    return job
