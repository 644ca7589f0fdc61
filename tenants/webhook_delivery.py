"""One try of a webhook delivery (the workers' ``workers.deliver_webhook`` task runs it).

A try is claimed first (its number must still be the delivery's next), so a duplicate task
sends nothing. The URL is checked again (DNS may have changed since the endpoint was saved)
and the POST goes to the address checked, with no redirect followed and a short timeout. Each
try is logged with its status and latency, and kept (``WebhookAttempt``, shown in the admin).

- A 2xx ends the delivery.
- 410 Gone ends it, and disables its endpoint: the receiver says it is gone for good.
- Anything else (another status, a refused or timed-out connection, a refused URL) is tried
  again after an exponential backoff with jitter, up to AUTOGLM_WEBHOOK_TRIES tries in all.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from autoglm_site.outbound import OutboundURLError, check_outbound_url, outbound_post
from autoglm_site.webhook_signing import signed_headers

from .models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from .webhooks import delivery_secret

logger = logging.getLogger(__name__)

USER_AGENT = "autoglm-webhooks/1"


def backoff(tries: int) -> float:
    """Seconds before the try after ``tries`` failed ones: doubling from
    AUTOGLM_WEBHOOK_RETRY_BASE up to AUTOGLM_WEBHOOK_RETRY_MAX, the second half of it random
    (so receivers that came back are not hit by every sender at once)."""
    ceiling = min(
        settings.AUTOGLM_WEBHOOK_RETRY_MAX, settings.AUTOGLM_WEBHOOK_RETRY_BASE * 2 ** (tries - 1)
    )
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def delivery_try(delivery_id: str, attempt: int) -> WebhookAttempt | None:
    """Try delivery ``delivery_id`` for the ``attempt + 1``-th time; None when that try is not
    this call's to make (already made, or the delivery has ended)."""
    number = attempt + 1
    # The claim's hold outlasts the request, so the sweeper does not queue it meanwhile.
    hold = timezone.now() + timedelta(
        seconds=settings.AUTOGLM_WEBHOOK_TIMEOUT + settings.AUTOGLM_WEBHOOK_RESEND_AFTER
    )
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status=WebhookDelivery.Status.PENDING, attempts=attempt
    ).update(attempts=number, next_attempt_at=hold)
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("endpoint", "tenant").get(pk=delivery_id)
    if delivery.endpoint is not None and not delivery.endpoint.is_active:
        _end(delivery, WebhookDelivery.Status.FAILED)
        return None
    status_code, error, latency_ms = _post(delivery)
    tried = WebhookAttempt.objects.create(
        delivery=delivery,
        number=number,
        status_code=status_code,
        error=error,
        latency_ms=latency_ms,
    )
    logger.info(
        "webhook try",
        extra={
            "webhook_id": delivery.webhook_id,
            "event": delivery.event_type,
            "try": number,
            "status_code": status_code,
            "error": error,
            "latency_ms": latency_ms,
        },
    )
    if status_code is not None and 200 <= status_code < 300:
        _end(delivery, WebhookDelivery.Status.SUCCEEDED)
    elif status_code == 410:
        _end(delivery, WebhookDelivery.Status.FAILED)
        if delivery.endpoint is not None:
            _disable(delivery.endpoint, "The receiver answered 410 Gone.")
    elif number >= settings.AUTOGLM_WEBHOOK_TRIES:
        _end(delivery, WebhookDelivery.Status.FAILED)
    else:
        due = timezone.now() + timedelta(seconds=backoff(number))
        WebhookDelivery.objects.filter(pk=delivery.pk, attempts=number).update(next_attempt_at=due)
    return tried


def _post(delivery: WebhookDelivery) -> tuple[int | None, str, int]:
    """The receiver's status (None when none came), why none came, and the latency in ms."""
    body = delivery.body.encode()
    started = time.monotonic()
    try:
        secret = delivery_secret(delivery)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **signed_headers(secret, delivery.webhook_id, int(time.time()), body),
        }
        checked = check_outbound_url(delivery.url)
        status_code = outbound_post(
            checked, body, headers=headers, timeout=settings.AUTOGLM_WEBHOOK_TIMEOUT
        )
        error = ""
    except OutboundURLError as exc:
        status_code, error = None, f"refused: {exc.message}"
    except OSError as exc:  # refused, reset, timed out, TLS
        status_code, error = None, f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # e.g. a secret sealed under another SECRET_KEY: a try, counted
        logger.exception("webhook try broke", extra={"webhook_id": delivery.webhook_id})
        status_code, error = None, f"{type(exc).__name__}: {exc}"
    latency_ms = int((time.monotonic() - started) * 1000)
    return status_code, error[:300], latency_ms


def _end(delivery: WebhookDelivery, status: str) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=status, ended_at=timezone.now())


def _disable(endpoint: WebhookEndpoint, reason: str) -> None:
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(is_active=False, disabled_reason=reason)
    logger.warning(
        "webhook endpoint disabled", extra={"endpoint": str(endpoint.pk), "reason": reason}
    )
