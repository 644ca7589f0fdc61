"""Writes and checks for tenants, members and API keys."""

import logging
import re
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from autoglm_site.errors import ApplicationError

from .models import KEY_PREFIX, ApiKey, Membership, Tenant

logger = logging.getLogger(__name__)

# <prefix>.<secret> as djangorestframework-api-key generates them: 8 and 32 alphanumerics.
_KEY_RE = re.compile(r"^sk-([A-Za-z0-9]{8})\.([A-Za-z0-9]{32})$")


class InvalidApiKeyError(ApplicationError):
    status_code = 401
    code = "invalid_api_key"


class TenantSuspendedError(ApplicationError):
    status_code = 403
    type = "permission_error"
    code = "tenant_suspended"


@transaction.atomic
def tenant_create(
    *,
    slug: str,
    name: str = "",
    requests_per_minute: int | None = None,
    tokens_per_minute: int | None = None,
    tokens_per_month: int | None = None,
    max_concurrent_jobs: int | None = None,
) -> Tenant:
    """Create a tenant, or update the limits of the one with this slug (operators re-run it)."""
    tenant, _ = Tenant.objects.update_or_create(
        slug=slug,
        defaults={
            "name": name or slug,
            "requests_per_minute": requests_per_minute,
            "tokens_per_minute": tokens_per_minute,
            "tokens_per_month": tokens_per_month,
            "max_concurrent_jobs": max_concurrent_jobs,
        },
    )
    return tenant


@transaction.atomic
def membership_ensure(
    *,
    tenant: Tenant,
    username: str,
    password: str | None = None,
    role: str = Membership.Role.MEMBER,
    email: str = "",
) -> Membership:
    """Make ``username`` a member of ``tenant`` with ``role``, creating the user if needed."""
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username, defaults={"email": email})
    if password is not None and (created or not user.check_password(password)):
        user.set_password(password)
        user.save(update_fields=["password"])
    membership, _ = Membership.objects.update_or_create(
        tenant=tenant, user=user, defaults={"role": role}
    )
    return membership


def api_key_create(
    *,
    tenant: Tenant,
    name: str,
    expires_days: int | None = None,
    allowed_models: list[str] | None = None,
    created_by=None,
    **limits: int | None,
) -> tuple[ApiKey, str]:
    """Issue a key for ``tenant``, optionally limited to some models and with its own
    (tighter) limits. Returns the row and the full key, which is never stored."""
    expiry = timezone.now() + timedelta(days=expires_days) if expires_days else None
    api_key, key = ApiKey.objects.create_key(
        tenant=tenant,
        name=name,
        expiry_date=expiry,
        allowed_models=allowed_models or [],
        created_by=created_by,
        **limits,
    )
    logger.info("api key created", extra={"tenant": tenant.slug, "key_prefix": api_key.prefix})
    return api_key, f"{KEY_PREFIX}{key}"


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke a key for good (the library refuses to un-revoke)."""
    if not api_key.revoked:
        api_key.revoked = True
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked", "revoked_at"])
        logger.info("api key revoked", extra={"key_prefix": api_key.prefix})
    return api_key


def api_key_authenticate(raw_key: str) -> ApiKey:
    """Resolve a presented key to its usable ``ApiKey``, or raise.

    Missing, malformed, unknown, wrong, revoked and expired keys all fail the same way, so a
    caller learns nothing about which keys exist.
    """
    match = _KEY_RE.match(raw_key or "")
    if not match:
        raise InvalidApiKeyError("Incorrect API key provided.")
    try:
        api_key = ApiKey.objects.get_from_key(raw_key[len(KEY_PREFIX) :])
    except ApiKey.DoesNotExist:
        raise InvalidApiKeyError("Incorrect API key provided.") from None
    if api_key.has_expired:
        raise InvalidApiKeyError("Incorrect API key provided.")
    if not api_key.tenant.is_active:
        raise TenantSuspendedError("This organisation is suspended.")
    api_key.touch()
    return api_key
