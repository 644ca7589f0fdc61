"""Share links: read-only snapshots of a conversation's branch, for the organisation's members.

A link holds a copy of the messages shown when it was made (``ShareLink.messages``), so what a
reader sees does not change as the conversation goes on, and a deleted conversation takes its
links with it. Only signed-in members of the link's tenant can open it; for anyone else, and
for a revoked or unknown token, there is nothing there (the same 404).
"""

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from autoglm_site.errors import InvalidRequestError, NotFoundError
from tenants.models import Membership, Tenant

from . import selectors
from .models import ChatSession, Message, ShareLink
from .services import session_create

# --- Reads ----------------------------------------------------------------------------------


def share_list(*, tenant: Tenant, session: ChatSession) -> QuerySet[ShareLink]:
    """The session's links, revoked ones included (their ``revoked_at`` says so)."""
    return ShareLink.objects.filter(tenant=tenant, session=session).select_related("created_by")


def share_get(*, tenant: Tenant, share_id) -> ShareLink:
    """The tenant's link with this id; a missing or foreign id raises the same 404."""
    pk = selectors._as_uuid(share_id)
    share = ShareLink.objects.filter(tenant=tenant, pk=pk).first() if pk else None
    if share is None:
        raise NotFoundError(f"No share with id {share_id!s}.", code="not_found")
    return share


def share_for_reader(*, token: str, user) -> ShareLink:
    """The live link with this token, if ``user`` is a member of its (active) organisation.

    A revoked or unknown token, a user of another organisation and a suspended organisation
    all raise the same 404: a link tells nothing to someone who may not read it.
    """
    share = (
        ShareLink.objects.select_related("tenant", "created_by")
        .filter(token=token, revoked_at__isnull=True)
        .first()
    )
    if (
        share is None
        or not share.tenant.is_active
        or not Membership.objects.filter(user=user, tenant_id=share.tenant_id).exists()
    ):
        raise NotFoundError("No such share link.", code="not_found")
    return share


# --- Writes ---------------------------------------------------------------------------------


def _snapshot(message: Message) -> dict:
    return {
        "role": message.role,
        "content": message.content,
        "attachments": message.attachments or [],
        "created_at": message.created_at.isoformat(),
    }


@transaction.atomic
def share_create(*, tenant: Tenant, session: ChatSession, user=None) -> ShareLink:
    """A new link to a copy of the session's branch shown now (first message to current).

    ``user`` is who shared it (None when an API key did).
    """
    messages = selectors.message_list(tenant=tenant, session=session)
    if not messages:
        raise InvalidRequestError(
            "The conversation has no messages yet; there is nothing to share.",
            code="empty_conversation",
        )
    return ShareLink.objects.create(
        tenant=tenant,
        session=session,
        created_by=user,
        title=session.title,
        messages=[_snapshot(message) for message in messages],
    )


def share_revoke(*, share: ShareLink) -> ShareLink:
    """Revoke a link: from now on it is gone (404) for everyone. Revoking twice changes
    nothing (the first time is kept)."""
    if share.revoked_at is None:
        # Conditional: a link revoked meanwhile by another request keeps its first time.
        ShareLink.objects.filter(pk=share.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        share.refresh_from_db(fields=["revoked_at"])
    return share


@transaction.atomic
def share_continue(*, share: ShareLink) -> ChatSession:
    """A new conversation in the link's organisation that starts with a copy of the snapshot,
    on the shared conversation's model (or the default one, if it is no longer served)."""
    source = ChatSession.objects.filter(pk=share.session_id).values("model", "params").first()
    model = source["model"] if source else None
    if model not in settings.AUTOGLM_MODELS:
        model = None
    session = session_create(
        tenant=share.tenant,
        model=model,
        title=share.title,
        params=(source or {}).get("params") or {},
    )
    parent = None
    for item in share.messages:
        parent = Message.objects.create(
            tenant=share.tenant,
            session=session,
            parent=parent,
            role=item.get("role", Message.Role.USER),
            content=item.get("content", ""),
            attachments=item.get("attachments") or [],
        )
    if parent is not None:
        session.current_message = parent
        session.save(update_fields=["current_message", "updated_at"])
    return session
