"""The base of every DRF API view: rate-limit headers on every response of an API key."""

from rest_framework.views import APIView

from tenants import quotas
from tenants.models import ApiKey


def ratelimit_headers(request) -> dict[str, str]:
    api_key = getattr(request, "auth", None)
    if not isinstance(api_key, ApiKey):
        return {}
    return quotas.peek(tenant=api_key.tenant, api_key=api_key).values


class ApiView(APIView):
    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if response.status_code in (401, 403):
            return response  # no usable key: nothing to report (and no key to look at)
        if (
            "x-ratelimit-limit-requests" not in response
            and "x-ratelimit-limit-tokens" not in response
        ):
            for name, value in ratelimit_headers(request).items():
                response[name] = value
        return response
