"""The two kinds of API view, answering alike: DRF views (``ApiView``) and async views
(``async_api``), which relay a stream without holding a thread per client.

Both authenticate with the same DRF authentication classes, validate with DRF serializers,
answer errors in the one error shape (``autoglm_site.errors.error_answer``) and send the
rate-limit headers of the caller's key. ``x-request-id`` comes from the middleware, for both.
"""

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from autoglm_site.errors import MethodNotAllowedError, error_response
from autoglm_site.json_body import json_loads

from . import quotas
from .auth import authenticate
from .models import ApiKey, Tenant


def ratelimit_headers(api_key) -> dict[str, str]:
    """The key's rate-limit state as headers; none for a caller without a key."""
    if not isinstance(api_key, ApiKey):
        return {}
    return quotas.peek(tenant=api_key.tenant, api_key=api_key).values


def has_ratelimit_headers(response) -> bool:
    return "x-ratelimit-limit-requests" in response or "x-ratelimit-limit-tokens" in response


def attach_ratelimit_headers(response, api_key) -> None:
    """Give the response the key's rate-limit headers, unless the view already set them."""
    if not has_ratelimit_headers(response):
        for name, value in ratelimit_headers(api_key).items():
            response[name] = value


# The base of every DRF API view: rate-limit headers on every response of an API key. (A comment,
# not a docstring: drf-spectacular would describe every operation with a docstring.)
class ApiView(APIView):
    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if response.status_code in (401, 403):
            return response  # no usable key: nothing to report (and no key to look at)
        attach_ratelimit_headers(response, getattr(request, "auth", None))
        return response


@dataclass(frozen=True)
class ApiCall:
    """What ``async_api`` hands its view: who calls, and the validated body (if it takes one)."""

    tenant: Tenant
    api_key: ApiKey | None  # None for a signed-in user of the browser UI
    body: serializers.Serializer | None


AsyncView = Callable[..., Awaitable[HttpResponse]]


def async_api(
    *,
    method: str,
    not_allowed: str,
    authentication_classes=None,
    body: type[serializers.Serializer] | None = None,
    **schema,
) -> Callable[[AsyncView], AsyncView]:
    """Make an async function the view of one API operation: ``view(request, call, **kwargs)``.

    Before the view runs: the method is checked (405 with ``not_allowed``), the caller is
    authenticated with ``authentication_classes`` (DRF's default, keys then session, unless
    given; a missing key is 401 with ``MISSING_KEY``), and with ``body`` (a serializer class)
    the JSON body is parsed and validated. An error raised by any of that or by the view
    itself is answered in the one error shape; an error inside a stream already started is the
    stream's to report.

    A successful answer to a key carries the key's rate-limit headers unless the view set them
    (from its admission). Errors carry only their own, as ``exc.headers`` (a 429's state).

    ``schema`` goes to ``extend_schema``, on top of ``body`` as the request body.
    """
    classes = (
        api_settings.DEFAULT_AUTHENTICATION_CLASSES
        if authentication_classes is None
        else authentication_classes
    )

    def decorate(view: AsyncView) -> AsyncView:
        @csrf_exempt  # keys need no CSRF check; a session is checked by its DRF class
        @functools.wraps(view)
        async def entry(request, *args, **kwargs) -> HttpResponse:
            if request.method != method:
                return error_response(MethodNotAllowedError(not_allowed), headers={"Allow": method})
            try:
                tenant, api_key = await sync_to_async(authenticate)(request, classes)
                data = validated(body, parse_json(request)) if body else None
                response = await view(request, ApiCall(tenant, api_key, data), *args, **kwargs)
            except Exception as exc:
                answer = error_response(exc)
                if answer is None:
                    raise
                return answer
            # (Only then to a thread, where the key's limits are read: a completion's answer
            # has its admission's already.)
            if api_key is not None and not has_ratelimit_headers(response):
                await sync_to_async(attach_ratelimit_headers)(response, api_key)
            return response

        # drf-spectacular finds a view's operations through ``callback.cls``, as
        # ``APIView.as_view()`` sets it; this class only describes the async view, from its
        # authentication classes and serializers, and never serves a request.
        def operation(self, request, *args, **kwargs):
            raise RuntimeError("an async_api view is served by its async entry, not by this class")

        entry.cls = type(
            f"{view.__name__}_schema",
            (APIView,),
            {
                "authentication_classes": classes,
                method.lower(): extend_schema(request=body, **schema)(operation),
            },
        )
        entry.initkwargs = {}
        return entry

    return decorate


def parse_json(request) -> object:
    return json_loads(request.body)


def validated(serializer_class: type[serializers.Serializer], data) -> serializers.Serializer:
    """A valid serializer of ``data``; a ``ValidationError`` (the first field's message) if not."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer
