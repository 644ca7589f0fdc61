import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from . import metrics
from .errors import error_page_response, error_response
from .tracing import new_trace_id, trace_id_var


class _Middleware:
    """A middleware that serves sync and async requests alike (``__call__`` sends an async
    request to ``__acall__``), so an async view never runs through a sync adapter."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)


class RequestIdMiddleware(_Middleware):
    """Give every request a trace id and echo it as ``x-request-id`` on every response."""

    def _start(self, request) -> object:
        request.request_id = new_trace_id(request.headers.get("x-request-id"))
        return trace_id_var.set(request.request_id)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        token = self._start(request)
        try:
            response = self.get_response(request)
        finally:
            trace_id_var.reset(token)
        response["x-request-id"] = request.request_id
        return response

    async def __acall__(self, request):
        token = self._start(request)
        try:
            response = await self.get_response(request)
        finally:
            trace_id_var.reset(token)
        response["x-request-id"] = request.request_id
        return response


class ApiErrorPageMiddleware(_Middleware):
    """No HTML error page on an API path, under any setting: Django's own pages (DEBUG's
    technical 404 and 500, the "Bad Request" page) become the one JSON error shape."""

    API_PREFIXES = ("/api/", "/v1/")

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        return self._json(request, self.get_response(request))

    async def __acall__(self, request):
        return self._json(request, await self.get_response(request))

    def process_exception(self, request, exception):
        """A view's outage (Redis or PostgreSQL down) answers 503, not a 500 page."""
        if not request.path.startswith(self.API_PREFIXES):
            return None
        return error_response(exception)

    def _json(self, request, response):
        content_type = response.get("Content-Type", "")
        if (
            response.status_code < 400
            or not content_type.startswith("text/html")
            or not request.path.startswith(self.API_PREFIXES)
        ):
            return response
        return error_page_response(response.status_code)


class HttpMetricsMiddleware(_Middleware):
    """Count every response by route (the URL pattern, not the path: ids would make a series
    each), method and status, and time it to its headers."""

    METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        started = time.perf_counter()
        response = self.get_response(request)
        self._record(request, response, started)
        return response

    async def __acall__(self, request):
        started = time.perf_counter()
        response = await self.get_response(request)
        self._record(request, response, started)
        return response

    def _record(self, request, response, started: float) -> None:
        match = getattr(request, "resolver_match", None)
        route = match.route if match is not None else "unmatched"
        method = request.method if request.method in self.METHODS else "other"
        metrics.HTTP_REQUESTS.labels(route=route, method=method, status=response.status_code).inc()
        metrics.HTTP_LATENCY.labels(route=route, method=method).observe(
            time.perf_counter() - started
        )


class OneThreadMiddleware:
    """The innermost middleware, sync only, so that Django runs the whole chain in sync mode:
    in the request's one thread, then into the async view once. Django's own middleware
    (sessions, CSRF, auth, messages ...) run sync code, and WhiteNoise's is sync only; with an
    async view innermost, Django ran the chain outside WhiteNoise in a thread, switched back to
    the event loop for the middleware inside it, and sent each of their ``process_request`` and
    ``process_response`` to the thread again: about ten switches per request, each a few
    hundred microseconds of CPU, against two."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)
