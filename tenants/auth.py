"""API-key authentication: ``Authorization: Bearer sk-...`` resolves to a key and its tenant.

One parser serves DRF views (``ApiKeyAuthentication``) and the async streaming views
(``aauthenticate``), so both refuse the same keys the same way.
"""

from dataclasses import dataclass

from asgiref.sync import sync_to_async
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from .models import ApiKey, Tenant
from .services import InvalidApiKeyError, api_key_authenticate

MISSING_KEY = "You didn't provide an API key. Send it as 'Authorization: Bearer sk-...'."


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


async def aauthenticate(request) -> ApiKey:
    """Authenticate a plain (async) Django request; raises the same errors as DRF views."""
    raw = key_from_header(request.headers.get("Authorization", "").encode("latin-1"))
    if raw is None:
        raise InvalidApiKeyError(MISSING_KEY)
    return await sync_to_async(api_key_authenticate)(raw)


def request_tenant(request) -> Tenant:
    """The tenant a request acts for; views call this rather than trusting client input."""
    principal = request.user
    if not isinstance(principal, ApiKeyPrincipal):
        raise exceptions.NotAuthenticated()
    return principal.tenant
