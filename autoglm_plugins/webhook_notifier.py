"""The webhook notifier: a plugin that turns what happens to a tenant into webhook events
(``tenants.webhooks`` signs and delivers them).

- ``job.succeeded``, ``job.failed``, ``job.cancelled``: when a job ends, to the tenant's
  endpoints that subscribe to the event and to the job's ``callback_url``. The event's data is
  the job's id, status, model, session, how it ended and its usage; a client fetches the answer
  itself (``GET /api/v1/jobs/{id}``), so no answer text travels in a webhook.
- ``quota.threshold``: when the tenant's tokens this month reach 80% and then 100% of its
  monthly quota, once each per month (configurable: ``{"quota_thresholds": [50, 90, 100]}``).

It is installed with autoglm (the ``autoglm.plugins`` entry point ``webhooks``), so it runs in
every web and worker process: a job ends in either.
"""

from __future__ import annotations

from django.utils import timezone

from autoglm_site import plugins
from autoglm_site.redisconn import redis_client
from tenants.models import Tenant, WebhookEndpoint
from tenants.selectors import usage_month
from tenants.webhooks import emit

QUOTA_THRESHOLD = WebhookEndpoint.Event.QUOTA_THRESHOLD
# Set when a threshold's event is sent, for the month: it is sent once.
SENT_KEY = "autoglm:quota-threshold:{tenant}:{month}:{percent}"
SENT_TTL = 40 * 86400


class WebhookNotifier:
    name = "webhooks"

    def __init__(self) -> None:
        self.thresholds = [80, 100]

    def configure(self, config: dict) -> None:
        unknown = set(config) - {"quota_thresholds"}
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)}; known: quota_thresholds")
        thresholds = config.get("quota_thresholds", self.thresholds)
        if not isinstance(thresholds, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) and 1 <= t <= 100 for t in thresholds
        ):
            raise ValueError("quota_thresholds must be a list of percentages from 1 to 100")
        self.thresholds = sorted(set(thresholds))

    def job_ended(self, event: plugins.JobEnded) -> None:
        tenant = Tenant.objects.get(slug=event.tenant)
        emit(
            tenant=tenant,
            event_type=f"job.{event.status}",
            data=job_data(event),
            callback_url=event.callback_url,
        )
        if event.prompt_tokens or event.completion_tokens:
            self.check_quota(tenant)

    def check_quota(self, tenant: Tenant) -> None:
        """Send ``quota.threshold`` for each threshold the month's usage has reached and that
        was not sent yet this month."""
        limit = tenant.tokens_per_month
        if not limit or not any(
            QUOTA_THRESHOLD in endpoint.events
            for endpoint in WebhookEndpoint.objects.filter(tenant=tenant, is_active=True)
        ):
            return
        used = usage_month(tenant=tenant)
        month = timezone.now().strftime("%Y-%m")
        for percent in self.thresholds:
            if used * 100 < percent * limit:
                break
            key = SENT_KEY.format(tenant=tenant.pk, month=month, percent=percent)
            if redis_client().set(key, "1", nx=True, ex=SENT_TTL):
                data = {
                    "object": "quota.threshold",
                    "tenant": tenant.slug,
                    "month": month,
                    "threshold_percent": percent,
                    "tokens_used": used,
                    "tokens_per_month": limit,
                }
                emit(tenant=tenant, event_type=QUOTA_THRESHOLD, data=data)


def job_data(event: plugins.JobEnded) -> dict:
    data = {
        "id": event.job_id,
        "object": "chat.job",
        "status": event.status,
        "model": event.model,
        "session_id": event.session_id,
        "finish_reason": None if event.status == "failed" else event.finish_reason,
        "error": (
            {"code": event.finish_reason, "message": event.error}
            if event.status == "failed"
            else None
        ),
        "usage": {
            "prompt_tokens": event.prompt_tokens,
            "completion_tokens": event.completion_tokens,
            "total_tokens": event.prompt_tokens + event.completion_tokens,
        },
    }
    return data
