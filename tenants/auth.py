"""Who is calling, and for which tenant.

Programs send ``Authorization: Bearer sk-...``: the key and its tenant
(``ApiKeyAuthentication``). People in the browser UI are signed in with Django's session
instead (DRF's ``SessionAuthentication``, CSRF-checked): they act in the tenant of their
membership, the one chosen with the switcher (``request.session["tenant_id"]``) or else their
first (``request_tenant``).

DRF views run these classes themselves; the async views run the very same ones through
``authenticate``, so every view refuses the same callers the same way.
"""

from dataclasses import dataclass

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from autoglm_site.errors import ApplicationError

from . import selectors
from .models import ApiKey, Membership, Tenant
from .services import InvalidApiKeyError, TenantSuspendedError, api_key_authenticate

# The session key that holds the id of the tenant a signed-in user acts in.
SESSION_TENANT_KEY = "tenant_id"

MISSING_KEY = "You didn't provide an API key. Send it as 'Authorization: Bearer sk-...'."


class NoMembershipError(ApplicationError):
    status_code = 403
    type = "permission_error"
    code = "no_membership"


@dataclass(frozen=True)
class ApiKeyPrincipal:
    """Who is calling: the key and its tenant. Stands in for ``request.user`` on API calls."""

    api_key: ApiKey
    is_authenticated: bool = True
    is_anonymous: bool = False

    @property
    def tenant(self) -> Tenant:
        return self.api_key.tenant


def key_from_header(header: bytes) -> str | None:
    """The presented key, or None when there is no Authorization header at all."""
    parts = header.split()
    if not parts:
        return None
    if parts[0].lower() != b"bearer" or len(parts) != 2:
        raise InvalidApiKeyError("Send your API key as 'Authorization: Bearer sk-...'.")
    try:
        return parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise InvalidApiKeyError("Incorrect API key provided.") from None


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        raw = key_from_header(get_authorization_header(request))
        if raw is None:
            return None  # IsAuthenticated then answers 401 for the missing key.
        api_key = api_key_authenticate(raw)
        return ApiKeyPrincipal(api_key=api_key), api_key

    def authenticate_header(self, request) -> str:
        return "Bearer"


def user_membership(user, tenant_id=None) -> Membership:
    """The membership a signed-in user acts through: the one in ``tenant_id`` (the session's
    choice) or else their first. Raises 403 when they have none or its tenant is suspended."""
    membership = selectors.user_membership(user=user, tenant_id=tenant_id)
    if membership is None:
        raise NoMembershipError("This account is not a member of any organisation.")
    if not membership.tenant.is_active:
        raise TenantSuspendedError("This organisation is suspended.")
    return membership


def session_membership(request) -> Membership:
    """``user_membership`` of the request's signed-in user and the tenant its session chose."""
    return user_membership(request.user, request.session.get(SESSION_TENANT_KEY))


def request_tenant(request) -> Tenant:
    """The tenant a request acts for; views call this rather than trusting client input.

    An API key's tenant, or a signed-in user's (``session_membership``).
    """
    principal = request.user
    if isinstance(principal, ApiKeyPrincipal):
        return principal.tenant
    if getattr(principal, "is_authenticated", False) and hasattr(principal, "memberships"):
        return session_membership(request).tenant
    raise exceptions.NotAuthenticated()


def authenticate(request, authentication_classes) -> tuple[Tenant, ApiKey | None]:
    """Authenticate a plain Django request as a DRF view would, with these DRF authentication
    classes: the tenant it acts for and its key (None for a signed-in user). Raises the errors
    DRF views raise, but for a caller with no credentials at all, which gets ``MISSING_KEY``.

    Blocking (database, and the key's last use): async views call it in a thread.
    """
    drf_request = Request(request, authenticators=[cls() for cls in authentication_classes])
    if drf_request.successful_authenticator is None:
        raise InvalidApiKeyError(MISSING_KEY)
    return request_tenant(drf_request), drf_request.auth
