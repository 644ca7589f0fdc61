from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from .tracing import new_trace_id, trace_id_var


class RequestIdMiddleware:
    """Give every request a trace id and echo it as ``x-request-id`` on every response."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

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
