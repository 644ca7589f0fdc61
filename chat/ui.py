"""The browser UI: server-rendered pages over the same selectors and services as the API.

Pages are Django templates; a few small ES modules (static/js/) talk to the native API with the
session cookie and the CSRF token, and stream answers from ``/api/v1/jobs/{id}/events`` with
``EventSource``. Everything a page shows is scoped by the tenant of the user's membership
(``tenants.auth.session_membership``): another tenant's id is "not found", as in the API.
The shell every page shares is tenants/ui_shell.py; the organisation's pages are tenants/ui.py.
"""

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response

from autoglm_site.errors import NotFoundError
from tenants.apiviews import ApiView
from tenants.auth import session_membership
from tenants.models import Membership
from tenants.ui_shell import secure, shell_context, ui_page

from . import selectors
from .attachments import TEXT_EXTENSIONS, TEXT_NAMES, file_chip
from .models import ChatJob
from .presenters import job_error

# --- Pages ----------------------------------------------------------------------------------


class LoginView(auth_views.LoginView):
    template_name = "ui/login.html"
    redirect_authenticated_user = True

    def dispatch(self, request, *args, **kwargs):
        return secure(super().dispatch(request, *args, **kwargs))


@require_GET
def home(request):
    return redirect("ui-chat")


@require_GET
@ui_page
def chat_page(request, membership: Membership, session_id=None):
    """A conversation (or, without an id, a new one that the first message creates)."""
    tenant = membership.tenant
    session = selectors.session_get(tenant=tenant, session_id=session_id) if session_id else None
    messages, tree, active_job, failed_job, stopped = [], [], None, None, set()
    if session is not None:
        leaf = _branch_through(tenant, session, request.GET.get("message"))
        messages = list(selectors.message_list(tenant=tenant, session=session, leaf=leaf))
        tree = [
            [str(pk), parent and str(parent)]
            for pk, parent in selectors.message_tree(tenant=tenant, session=session).values_list(
                "id", "parent_id"
            )
        ]
        stopped = selectors.session_stopped_message_ids(tenant=tenant, session=session)
        latest = selectors.session_latest_job(tenant=tenant, session=session)
        if latest is not None and not latest.is_finished:
            active_job = latest
        elif latest is not None and latest.status == ChatJob.Status.FAILED:
            failed_job = latest
    config = {
        "session": None
        if session is None
        else {
            "id": str(session.id),
            "title": session.title,
            "model": session.model,
            "system_prompt": session.system_prompt,
            "params": session.params,
        },
        "tree": tree,  # [id, parent id] of every message, oldest first: the versions' arrows
        "models": list(settings.AUTOGLM_MODELS),
        "default_model": settings.AUTOGLM_DEFAULT_MODEL,
        "default_max_tokens": settings.AUTOGLM_DEFAULT_MAX_TOKENS,
        "max_tokens_limit": settings.AUTOGLM_MAX_TOKENS_LIMIT,
        "attachments": {
            "max_files": settings.AUTOGLM_MAX_ATTACHMENTS,
            "max_chars": settings.AUTOGLM_MAX_ATTACHMENT_CHARS,
            "extensions": sorted(TEXT_EXTENSIONS),
            "names": sorted(TEXT_NAMES),
        },
        "active_job": None
        if active_job is None
        else {
            "id": str(active_job.id),
            "status": active_job.status,
            "user_message_id": active_job.user_message_id and str(active_job.user_message_id),
        },
        "failed_job": None
        if failed_job is None
        else {"id": str(failed_job.id), "error": job_error(failed_job)["error"]},
    }
    context = {
        **shell_context(request, membership),
        "current_session": session,
        "session": session,
        "messages": [
            {
                "id": m.id,
                "parent_id": m.parent_id,
                "role": m.role,
                "content": m.content,
                "stopped": m.id in stopped,
                "attachments": [file_chip(f) for f in m.attachments],
            }
            for m in messages
        ],
        "active_job": active_job,
        "failed_job": failed_job,
        "model": session.model if session else settings.AUTOGLM_DEFAULT_MODEL,
        "form": _settings_form((session.params if session else {}) or {}),
        "models": list(settings.AUTOGLM_MODELS),
        "default_max_tokens": settings.AUTOGLM_DEFAULT_MAX_TOKENS,
        "max_tokens_limit": settings.AUTOGLM_MAX_TOKENS_LIMIT,
        "chat_config": config,
    }
    return render(request, "ui/chat.html", context)


def _branch_through(tenant, session, message_id):
    """The end of the branch to show: the newest one through ``message_id`` (a search hit, a
    version picked), or None (the session's current branch) without one or for a stale id."""
    if not message_id:
        return None
    try:
        message = selectors.message_get(
            tenant=tenant, session=session, message_id=message_id, param="message"
        )
    except NotFoundError:
        return None
    return selectors.newest_leaf(message).pk


def _settings_form(params: dict) -> dict:
    """The settings panel's initial values: the session's defaults, blank for unset ones."""
    temperature = params.get("temperature")
    return {
        "temperature": 1.0 if temperature is None else temperature,
        "max_tokens": params.get("max_tokens") or "",
        "top_p": params.get("top_p") or "",
    }


# --- Small JSON endpoints of the UI (session cookie + CSRF; the API's error shape) ---------


@extend_schema(exclude=True)  # the UI's own endpoints, not part of the public API
class UiApiView(ApiView):
    """Browser-only endpoints: a signed-in session (CSRF-checked on writes), never a key."""

    authentication_classes = [SessionAuthentication]


class JobStateOutput(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    queue_position = serializers.IntegerField(allow_null=True)


class JobStateApi(UiApiView):
    @extend_schema(responses=JobStateOutput, summary="A job's status and place in its queue")
    def get(self, request, job_id):
        job = selectors.job_get(tenant=session_membership(request).tenant, job_id=job_id)
        return Response(
            {
                "id": job.id,
                "status": job.status,
                "queue_position": selectors.job_queue_position(job),
            }
        )
