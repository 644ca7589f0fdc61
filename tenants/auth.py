"""DRF authentication: ``Authorization: Bearer sk-...`` resolves to a key and its tenant."""

from dataclasses import dataclass

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from .models import ApiKey, Tenant
from .services import InvalidApiKeyError, api_key_authenticate


@dataclass(frozen=True)
class ApiKeyPrincipal:
    """Who is calling: the key and its tenant. Stands in for ``request.user`` on API calls."""

    api_key: ApiKey
    is_authenticated: bool = True
    is_anonymous: bool = False

    @property
    def tenant(self) -> Tenant:
        return self.api_key.tenant


class ApiKeyAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts:
            return None  # Lets IsAuthenticated answer 401 "missing key".
        if parts[0].lower() != self.keyword or len(parts) != 2:
            raise InvalidApiKeyError("Send your API key as 'Authorization: Bearer sk-...'.")
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise InvalidApiKeyError("Incorrect API key provided.") from None
        api_key = api_key_authenticate(raw)
        return ApiKeyPrincipal(api_key=api_key), api_key

    def authenticate_header(self, request) -> str:
        return "Bearer"


def request_tenant(request) -> Tenant:
    """The tenant a request acts for; views call this rather than trusting client input."""
    principal = request.user
    if not isinstance(principal, ApiKeyPrincipal):
        raise exceptions.NotAuthenticated()
    return principal.tenant
