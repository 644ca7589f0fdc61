"""The pages of share links: a shared conversation, read-only, and "Continue in a new chat".

Both need a signed-in member of the link's organisation (``shares.share_for_reader``); for
anyone else, and for a revoked or unknown link, ``ui_page`` answers the same 404 page.
"""

from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from tenants.auth import SESSION_TENANT_KEY
from tenants.models import Membership
from tenants.ui_shell import shell_context, ui_page

from . import shares
from .attachments import file_chip


@require_GET
@ui_page
def share_page(request, membership: Membership, token: str):
    share = shares.share_for_reader(token=token, user=request.user)
    context = {
        **shell_context(request, membership),
        "share": share,
        "shared_by": share.created_by.get_username() if share.created_by else None,
        "messages": [
            {
                "role": m.get("role", "user"),
                "content": m.get("content", ""),
                "attachments": [file_chip(f) for f in m.get("attachments") or []],
            }
            for m in share.messages
        ],
    }
    return render(request, "ui/share.html", context)


@require_POST
@ui_page
def share_continue(request, membership: Membership, token: str):
    """Copy the snapshot into a new conversation of the reader's, and open it."""
    share = shares.share_for_reader(token=token, user=request.user)
    session = shares.share_continue(share=share)
    if membership.tenant_id != share.tenant_id:
        # The copy lives in the link's organisation: act there, or it would be "not found".
        request.session[SESSION_TENANT_KEY] = share.tenant_id
    return redirect("ui-chat-session", session_id=session.id)
