"""Reads of tenancy data: memberships, keys and the usage ledger, always scoped by tenant."""

from datetime import date, datetime, timedelta

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from autoglm_site.errors import NotFoundError

from .models import ApiKey, Membership, Tenant, UsageRecord


def user_membership(*, user, tenant_id: int | None = None) -> Membership | None:
    """The user's membership in ``tenant_id``, or their first one; None if they have none."""
    memberships = Membership.objects.select_related("tenant").filter(user=user).order_by("id")
    if tenant_id is not None:
        chosen = memberships.filter(tenant_id=tenant_id).first()
        if chosen is not None:
            return chosen
    return memberships.first()


def api_key_list(*, tenant: Tenant) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(tenant=tenant).order_by("-created")


def api_key_get(*, tenant: Tenant, prefix: str) -> ApiKey:
    """The tenant's key with this prefix; a missing or foreign prefix raises the same 404."""
    # No key has a NUL in its prefix, and PostgreSQL refuses to compare text holding one.
    api_key = (
        None if "\x00" in prefix else ApiKey.objects.filter(tenant=tenant, prefix=prefix).first()
    )
    if api_key is None:
        raise NotFoundError(f"No API key with id {prefix}.")
    return api_key


def usage_daily(*, tenant: Tenant, days: int = 30, today: date | None = None) -> list[dict]:
    """Tokens and requests per day for the last ``days`` days, oldest first, zeros included."""
    today = today or timezone.now().date()
    start = today - timedelta(days=days - 1)
    rows = (
        UsageRecord.objects.filter(tenant=tenant, created_at__date__gte=start)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(
            prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"), requests=Count("id")
        )
    )
    by_day = {row["day"]: row for row in rows}
    result = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        row = by_day.get(day, {})
        prompt, completion = row.get("prompt") or 0, row.get("completion") or 0
        result.append(
            {
                "date": day.isoformat(),
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "requests": row.get("requests") or 0,
            }
        )
    return result


def usage_month(
    *, tenant: Tenant, api_key: ApiKey | None = None, now: datetime | None = None
) -> int:
    """Tokens used this calendar month (UTC), or the month of ``now``, from the ledger.

    The quotas seed a scope's Redis month counter with it (``api_key`` for a key's scope).
    """
    now = now or timezone.now()
    start = datetime(now.year, now.month, 1, tzinfo=now.tzinfo)
    query = Q(tenant=tenant, created_at__gte=start)
    if api_key is not None:
        query &= Q(api_key=api_key)
    total = UsageRecord.objects.filter(query).aggregate(
        p=Sum("prompt_tokens"), c=Sum("completion_tokens")
    )
    return (total["p"] or 0) + (total["c"] or 0)
