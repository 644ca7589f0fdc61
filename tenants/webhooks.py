"""Webhooks: a tenant's endpoints, and the events sent to them or to a job's ``callback_url``.

An event becomes one ``WebhookDelivery`` per URL, its body fixed when it is made. Each try runs
as a Celery task on the workers (``tenants.webhook_delivery``): at once after the event's
transaction commits, and later, when a try failed, when the workers' sweeper finds it due. So a
delivery survives a broker that refused the task, a Redis that lost it and a worker that died
while sending it: at least once, the same ``webhook-id`` on every try.

Every delivery is signed (Standard Webhooks): an endpoint's with its own secret, a callback's
with its tenant's callback secret. Both are kept sealed (``autoglm_site.sealing``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from autoglm_site.celery import app
from autoglm_site.errors import InvalidRequestError
from autoglm_site.outbound import check_outbound_url
from autoglm_site.sealing import seal, unseal
from autoglm_site.webhook_signing import new_webhook_secret

from .models import Tenant, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

DELIVER_TASK = "workers.deliver_webhook"
_ENDPOINT_SECRET = "webhook-endpoint-secret"
_CALLBACK_SECRET = "webhook-callback-secret"


def endpoint_create(
    *,
    tenant: Tenant,
    url: str,
    events: list[str],
    description: str = "",
    created_by=None,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret (``whsec_...``), which is shown this once."""
    check_outbound_url(url, param="url")
    secret = new_webhook_secret()
    endpoint = WebhookEndpoint(
        tenant=tenant,
        url=url.strip(),
        events=list(dict.fromkeys(events)),
        description=description,
        secret_sealed=seal(_ENDPOINT_SECRET, secret),
        created_by=created_by,
    )
    _clean(endpoint)
    endpoint.save()
    return endpoint, secret


def endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    events: list[str] | None = None,
    description: str | None = None,
    is_active: bool | None = None,
) -> WebhookEndpoint:
    if url is not None:
        check_outbound_url(url, param="url")
        endpoint.url = url.strip()
    if events is not None:
        endpoint.events = list(dict.fromkeys(events))
    if description is not None:
        endpoint.description = description
    if is_active is not None:
        endpoint.is_active = is_active
        if is_active:
            endpoint.disabled_reason = ""
    _clean(endpoint)
    endpoint.save()
    return endpoint


def _clean(endpoint: WebhookEndpoint) -> None:
    """The model's own checks, as a 400 naming the field (the API validated most already)."""
    try:
        endpoint.full_clean(exclude=["tenant", "created_by"])
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise InvalidRequestError(" ".join(messages), param=field) from exc


def endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Delete the endpoint, its deliveries and their tries (pending ones are not sent)."""
    endpoint.delete()


def endpoint_secret(endpoint: WebhookEndpoint) -> str:
    return unseal(_ENDPOINT_SECRET, endpoint.secret_sealed)


def callback_secret(tenant: Tenant, *, rotate: bool = False) -> str:
    """The secret that signs deliveries to the tenant's jobs' ``callback_url``; made the first
    time it is asked for (or anew, ``rotate``)."""
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
        if tenant.callback_secret_sealed and not rotate:
            return unseal(_CALLBACK_SECRET, tenant.callback_secret_sealed)
        secret = new_webhook_secret()
        tenant.callback_secret_sealed = seal(_CALLBACK_SECRET, secret)
        tenant.save(update_fields=["callback_secret_sealed"])
        return secret


def delivery_secret(delivery: WebhookDelivery) -> str:
    if delivery.endpoint_id is not None:
        return endpoint_secret(delivery.endpoint)
    return callback_secret(delivery.tenant)


def emit(
    *, tenant: Tenant, event_type: str, data: dict, callback_url: str = ""
) -> list[WebhookDelivery]:
    """Send an event to the tenant's active endpoints that subscribe to it, and to
    ``callback_url``; the first tries go out once the caller's transaction commits."""
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(tenant=tenant, is_active=True)
        if event_type in endpoint.events
    ]
    if not endpoints and not callback_url:
        return []
    body = json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "type": event_type,
            "created_at": int(time.time()),
            "data": data,
        },
        separators=(",", ":"),
    )
    # Sent again by the sweeper if the first try never happens (the task was lost).
    backstop = timezone.now() + timedelta(seconds=settings.AUTOGLM_WEBHOOK_RESEND_AFTER)
    targets = [(endpoint, endpoint.url) for endpoint in endpoints]
    if callback_url:
        targets.append((None, callback_url))
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            tenant=tenant,
            endpoint=endpoint,
            url=url,
            event_type=event_type,
            body=body,
            next_attempt_at=backstop,
        )
        for endpoint, url in targets
    )
    for delivery in deliveries:
        transaction.on_commit(partial(delivery_send, delivery.id, attempt=0))
    return deliveries


def delivery_send(delivery_id, *, attempt: int) -> bool:
    """Queue try number ``attempt + 1`` of a delivery; False when the broker refused it (the
    sweeper sends it again when it is due)."""
    try:
        app.send_task(
            DELIVER_TASK, args=[str(delivery_id), attempt], queue=settings.AUTOGLM_WEBHOOK_QUEUE
        )
    except (KombuError, RedisError, OSError) as exc:
        logger.warning(
            "webhook delivery left for the sweeper: the broker refused it",
            extra={"delivery_id": str(delivery_id), "error": str(exc)},
        )
        return False
    return True


def deliveries_send_due(*, now=None) -> int:
    """Queue the next try of every pending delivery that is due (the workers' sweeper calls
    this each round); how many. Each is held back for AUTOGLM_WEBHOOK_RESEND_AFTER so the
    next rounds do not queue it again while its try waits in the queue."""
    now = now or timezone.now()
    due = list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now
        ).values_list("id", "attempts")[:500]
    )
    hold = now + timedelta(seconds=settings.AUTOGLM_WEBHOOK_RESEND_AFTER)
    sent = 0
    for delivery_id, attempts in due:
        held = WebhookDelivery.objects.filter(
            pk=delivery_id, attempts=attempts, next_attempt_at__lte=now
        ).update(next_attempt_at=hold)
        if held and delivery_send(delivery_id, attempt=attempts):
            sent += 1
    return sent


def deliveries_prune(*, now=None) -> int:
    """Forget ended deliveries older than AUTOGLM_WEBHOOK_KEEP_DAYS (their tries go too)."""
    bound = (now or timezone.now()) - timedelta(days=settings.AUTOGLM_WEBHOOK_KEEP_DAYS)
    deleted, _ = (
        WebhookDelivery.objects.exclude(status=WebhookDelivery.Status.PENDING)
        .filter(created_at__lt=bound)
        .delete()
    )
    return deleted
