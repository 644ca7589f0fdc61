"""The browser UI: server-rendered pages over the same selectors and services as the API.

Pages are Django templates; a few small ES modules (static/js/) talk to the native API with the
session cookie and the CSRF token, and stream answers from ``/api/v1/jobs/{id}/events`` with
``EventSource``. Everything a page shows is scoped by the tenant of the user's membership
(``tenants.auth.session_membership``): another tenant's id is "not found", as in the API.
"""

from functools import wraps

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.timesince import timesince
from django.views.decorators.http import require_GET, require_POST
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response

from autoglm_site.errors import ApplicationError, NotFoundError
from tenants import selectors as tenant_selectors
from tenants.api import ManagerRequiredError
from tenants.apiviews import ApiView
from tenants.auth import SESSION_TENANT_KEY, session_membership
from tenants.charts import fmt_count, usage_chart
from tenants.models import Membership
from tenants.services import TenantSuspendedError

from . import selectors, services
from .models import ChatJob
from .presenters import JobOutput, job_error

# Every page: scripts, styles, images and connections from this origin only. Nothing a model or
# a user writes can run even if it slipped past the Markdown sanitizer (no inline script).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SIDEBAR_SESSIONS = 200  # the newest conversations listed in the sidebar
MANAGER_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)


# --- Page plumbing --------------------------------------------------------------------------


def _secure(response: HttpResponse) -> HttpResponse:
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Referrer-Policy"] = "same-origin"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _error_page(request, status_code: int, title: str, message: str) -> HttpResponse:
    memberships = []
    if request.user.is_authenticated:
        memberships = list(
            Membership.objects.select_related("tenant").filter(user=request.user).order_by("id")
        )
    context = {
        "title": title,
        "message": message,
        "memberships": memberships,
        "current_tenant_id": request.session.get(SESSION_TENANT_KEY),
    }
    return _secure(render(request, "ui/error.html", context, status=status_code))


def ui_page(view):
    """A signed-in page: resolves the membership the user acts through (passed to the view)
    and turns the API's errors into HTML pages (403 no membership or suspended, 404)."""

    @wraps(view)
    @login_required
    def wrapper(request, *args, **kwargs):
        try:
            membership = session_membership(request)
            response = view(request, membership, *args, **kwargs)
        except TenantSuspendedError:
            return _error_page(
                request,
                403,
                "Organisation suspended",
                "This organisation is suspended. Its conversations and keys are kept; ask "
                "the operator of this service to reactivate it.",
            )
        except NotFoundError:
            return _error_page(
                request, 404, "Not found", "There is nothing here, or it is not yours to see."
            )
        except ApplicationError as exc:
            return _error_page(request, exc.status_code, "Not allowed", exc.message)
        return _secure(response)

    return wrapper


def _shell_context(request, membership: Membership, *, current_session=None) -> dict:
    """What every page of the app shell shows: the sidebar and the organisation switcher."""
    tenant = membership.tenant
    memberships = Membership.objects.select_related("tenant").filter(user=request.user)
    return {
        "membership": membership,
        "tenant": tenant,
        "is_manager": membership.role in MANAGER_ROLES,
        "memberships": memberships.order_by("tenant__name", "id"),
        "sessions": selectors.session_list(tenant=tenant)[:SIDEBAR_SESSIONS],
        "current_session": current_session,
    }


def _require_manager(membership: Membership) -> None:
    if membership.role not in MANAGER_ROLES:
        raise ManagerRequiredError(
            "Only the organisation's owners and admins may manage keys and see usage."
        )


# --- Pages ----------------------------------------------------------------------------------


class LoginView(auth_views.LoginView):
    template_name = "ui/login.html"
    redirect_authenticated_user = True

    def dispatch(self, request, *args, **kwargs):
        return _secure(super().dispatch(request, *args, **kwargs))


@require_GET
def home(request):
    return redirect("ui-chat")


@require_GET
@ui_page
def chat_page(request, membership: Membership, session_id=None):
    """A conversation (or, without an id, a new one that the first message creates)."""
    tenant = membership.tenant
    session = selectors.session_get(tenant=tenant, session_id=session_id) if session_id else None
    messages, active_job, failed_job, stopped = [], None, None, set()
    if session is not None:
        messages = list(selectors.message_list(tenant=tenant, session=session))
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
        "models": list(settings.AUTOGLM_MODELS),
        "default_model": settings.AUTOGLM_DEFAULT_MODEL,
        "default_max_tokens": settings.AUTOGLM_DEFAULT_MAX_TOKENS,
        "max_tokens_limit": settings.AUTOGLM_MAX_TOKENS_LIMIT,
        "active_job": None
        if active_job is None
        else {"id": str(active_job.id), "status": active_job.status},
        "failed_job": None
        if failed_job is None
        else {"id": str(failed_job.id), "error": job_error(failed_job)["error"]},
    }
    context = {
        **_shell_context(request, membership, current_session=session),
        "session": session,
        "messages": [
            {"id": m.id, "role": m.role, "content": m.content, "stopped": m.id in stopped}
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


def _ago(moment, now) -> str:
    """When something last happened, for people: just now, 5 minutes ago, 2 days ago."""
    if moment is None:
        return ""
    if (now - moment).total_seconds() < 60:
        return "Just now"
    return f"{timesince(moment, now, depth=1)} ago"


def _settings_form(params: dict) -> dict:
    """The settings panel's initial values: the session's defaults, blank for unset ones."""
    temperature = params.get("temperature")
    return {
        "temperature": 1.0 if temperature is None else temperature,
        "max_tokens": params.get("max_tokens") or "",
        "top_p": params.get("top_p") or "",
    }


@require_GET
@ui_page
def keys_page(request, membership: Membership):
    """The organisation's API keys: create (secret shown once), list masked, revoke."""
    _require_manager(membership)
    keys = list(tenant_selectors.api_key_list(tenant=membership.tenant))
    now = timezone.now()
    context = {
        **_shell_context(request, membership),
        "keys": [
            {
                "key": key,
                "expired": bool(key.expiry_date and key.expiry_date <= now),
                "last_used": _ago(key.last_used_at, now),
            }
            for key in keys
        ],
        "models": list(settings.AUTOGLM_MODELS),
    }
    return render(request, "ui/keys.html", context)


@require_GET
@ui_page
def usage_page(request, membership: Membership):
    """Tokens per day for 30 days as a chart, and the month against the quota."""
    _require_manager(membership)
    tenant = membership.tenant
    daily = tenant_selectors.usage_daily(tenant=tenant, days=30)
    used = tenant_selectors.usage_month(tenant=tenant)
    limit = tenant.tokens_per_month
    requests = sum(d["requests"] for d in daily)
    context = {
        **_shell_context(request, membership),
        "daily": [{**d, **{f"{k}_text": fmt_count(d[k]) for k in _DAY_COUNTS}} for d in daily],
        "chart": usage_chart(daily),
        "month": {
            "used": used,
            "used_text": fmt_count(used),
            "limit": limit,
            "limit_text": fmt_count(limit),
            "remaining_text": fmt_count(None if limit is None else max(0, limit - used)),
            "percent": None if not limit else min(100.0, round(used / limit * 100, 1)),
        },
        "totals": {
            "tokens": fmt_count(sum(d["total_tokens"] for d in daily)),
            "prompt": fmt_count(sum(d["prompt_tokens"] for d in daily)),
            "completion": fmt_count(sum(d["completion_tokens"] for d in daily)),
            "requests": fmt_count(requests),
            "requests_plural": requests != 1,
        },
        "limits": [
            ("Requests per minute", fmt_count(tenant.requests_per_minute, "Unlimited")),
            ("Tokens per minute", fmt_count(tenant.tokens_per_minute, "Unlimited")),
            ("Tokens per month", fmt_count(tenant.tokens_per_month, "Unlimited")),
            ("Concurrent jobs", fmt_count(tenant.max_concurrent_jobs, "Unlimited")),
        ],
    }
    return render(request, "ui/usage.html", context)


_DAY_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens", "requests")


@require_POST
@login_required
def tenant_switch(request):
    """Act in another organisation the user belongs to (the switcher's form posts here)."""
    try:
        tenant_id = int(request.POST.get("tenant", ""))
    except ValueError:
        tenant_id = None
    membership = (
        tenant_selectors.user_membership(user=request.user, tenant_id=tenant_id)
        if tenant_id is not None
        else None
    )
    if membership is None or membership.tenant_id != tenant_id:
        return _error_page(request, 404, "Not found", "You are not a member of that organisation.")
    request.session[SESSION_TENANT_KEY] = tenant_id
    return redirect("ui-chat")


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


class SessionRegenerateApi(UiApiView):
    @extend_schema(
        request=None,
        responses={202: JobOutput},
        summary="Answer the last message again, replacing its answer",
    )
    def post(self, request, session_id):
        tenant = session_membership(request).tenant
        session = selectors.session_get(tenant=tenant, session_id=session_id)
        job, limits = services.session_regenerate(
            tenant=tenant, session=session, trace_id=request.request_id
        )
        return Response(
            JobOutput(job, context={"request": request}).data,
            status=status.HTTP_202_ACCEPTED,
            headers=limits.values,
        )
