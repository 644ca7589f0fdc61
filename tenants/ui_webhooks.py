"""The organisation's Webhooks page: its endpoints (add one, its secret shown once; enable,
disable, delete), each with its recent deliveries and their tries, and the secret that signs
job callbacks. Owners and admins only; the page's script (static/js/webhooks.js) acts through
the webhooks API (tenants/api_webhooks.py) with the session cookie."""

from django.shortcuts import render
from django.views.decorators.http import require_GET

from .models import Membership, WebhookDelivery, WebhookEndpoint
from .roles import membership_require_manager
from .ui_shell import shell_context, ui_page

DELIVERIES_SHOWN = 10


@require_GET
@ui_page
def webhooks_page(request, membership: Membership):
    membership_require_manager(
        membership, message="Only the organisation's owners and admins may manage webhooks."
    )
    endpoints = list(WebhookEndpoint.objects.filter(tenant=membership.tenant))
    for endpoint in endpoints:
        endpoint.recent = list(endpoint.deliveries.prefetch_related("tries")[:DELIVERIES_SHOWN])
    context = {
        **shell_context(request, membership),
        "endpoints": endpoints,
        "events": WebhookEndpoint.Event.values,
        "statuses": WebhookDelivery.Status,
    }
    return render(request, "ui/webhooks.html", context)
