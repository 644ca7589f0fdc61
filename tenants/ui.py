"""The organisation's pages of the browser UI: its API keys, its usage, and the switcher.

Only owners and admins see keys and usage (``tenants.roles``, as in the API); the pages'
scripts (static/js/keys.js) act through the keys API with the session cookie.
"""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.timesince import timesince
from django.views.decorators.http import require_GET, require_POST

from . import selectors
from .auth import SESSION_TENANT_KEY
from .charts import fmt_count, usage_chart
from .models import Membership
from .roles import membership_require_manager
from .ui_shell import error_page, shell_context, ui_page

_MANAGERS_ONLY = "Only the organisation's owners and admins may manage keys and see usage."
_DAY_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens", "requests")


def _ago(moment, now) -> str:
    """When something last happened, for people: just now, 5 minutes ago, 2 days ago."""
    if moment is None:
        return ""
    if (now - moment).total_seconds() < 60:
        return "Just now"
    return f"{timesince(moment, now, depth=1)} ago"


@require_GET
@ui_page
def keys_page(request, membership: Membership):
    """The organisation's API keys: create (secret shown once), list masked, revoke."""
    membership_require_manager(membership, message=_MANAGERS_ONLY)
    keys = list(selectors.api_key_list(tenant=membership.tenant))
    now = timezone.now()
    context = {
        **shell_context(request, membership),
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
    membership_require_manager(membership, message=_MANAGERS_ONLY)
    tenant = membership.tenant
    daily = selectors.usage_daily(tenant=tenant, days=30)
    used = selectors.usage_month(tenant=tenant)
    limit = tenant.tokens_per_month
    requests = sum(d["requests"] for d in daily)
    context = {
        **shell_context(request, membership),
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


@require_POST
@login_required
def tenant_switch(request):
    """Act in another organisation the user belongs to (the switcher's form posts here)."""
    try:
        tenant_id = int(request.POST.get("tenant", ""))
    except ValueError:
        tenant_id = None
    membership = (
        selectors.user_membership(user=request.user, tenant_id=tenant_id)
        if tenant_id is not None
        else None
    )
    if membership is None or membership.tenant_id != tenant_id:
        return error_page(request, 404, "Not found", "You are not a member of that organisation.")
    request.session[SESSION_TENANT_KEY] = tenant_id
    return redirect("ui-chat")
