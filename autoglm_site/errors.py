"""One error type for the core logic and one JSON shape for every error a client sees.

``{"error": {"message", "type", "param", "code"}}`` with OpenAI's status codes, so OpenAI
clients map our errors to their own exception classes.
"""

import logging

import redis
from django import db
from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """Base of every error the core logic raises for a client to see."""

    status_code = status.HTTP_400_BAD_REQUEST
    type = "invalid_request_error"
    code = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequestError(ApplicationError):
    pass


class NotFoundError(ApplicationError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class RetryLaterError(ApplicationError):
    """503 with ``retry-after``: the request was fine, the service cannot take it now."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    type = "server_error"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None):
        super().__init__(message, code=code)
        self.headers = {"retry-after": str(max(1, retry_after))}


class ModelUnavailableError(RetryLaterError):
    """The model is configured, but no live worker serves it (none is running, or each refused
    it at start)."""

    code = "model_unavailable"


class ServerOverloadedError(RetryLaterError):
    """The model's queue is deeper than AUTOGLM_MAX_QUEUE_DEPTH."""

    code = "server_overloaded"


class MethodNotAllowedError(ApplicationError):
    status_code = status.HTTP_405_METHOD_NOT_ALLOWED
    code = "method_not_allowed"


class ConflictError(ApplicationError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class IdempotencyKeyReusedError(ApplicationError):
    """The Idempotency-Key came with another request before (another body or endpoint)."""

    status_code = 422
    code = "idempotency_key_reused"


class IdempotencyKeyInFlightError(ConflictError):
    """The first request with this Idempotency-Key has not answered yet: retry shortly."""

    code = "idempotency_key_in_flight"

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message, param="Idempotency-Key")
        self.headers = {"retry-after": str(retry_after)}


def error_body(message: str, *, type: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def first_validation_error(detail, path: str = "") -> tuple[str | None, str]:
    """Walk DRF's nested error detail to the first message and the dotted path of its field."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key in ("non_field_errors", "__all__"):
                return first_validation_error(value, path)
            child = f"{path}.{key}" if path else str(key)
            return first_validation_error(value, child)
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)) and value:
                child = f"{path}[{index}]" if isinstance(value, dict) else path
                return first_validation_error(value, child)
            if value:
                return path or None, str(value)
    return path or None, str(detail)


_DRF_CODES = {
    exceptions.NotAuthenticated: (401, "invalid_request_error", "invalid_api_key"),
    exceptions.AuthenticationFailed: (401, "invalid_request_error", "invalid_api_key"),
    exceptions.PermissionDenied: (403, "permission_error", "permission_denied"),
    exceptions.NotFound: (404, "invalid_request_error", "not_found"),
    exceptions.MethodNotAllowed: (405, "invalid_request_error", "method_not_allowed"),
    exceptions.NotAcceptable: (406, "invalid_request_error", "not_acceptable"),
    exceptions.UnsupportedMediaType: (415, "invalid_request_error", "unsupported_media_type"),
    exceptions.ParseError: (400, "invalid_request_error", "invalid_json"),
    exceptions.Throttled: (429, "rate_limit_error", "rate_limit_exceeded"),
}


# Redis or PostgreSQL unreachable (down, restarting, out of connections).
OUTAGES = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    db.OperationalError,
    db.InterfaceError,
)
OUTAGE_RETRY_AFTER_S = 5


def error_answer(exc: Exception) -> tuple[int, dict, dict[str, str]] | None:
    """The status, body and headers that answer ``exc`` in the one error shape; None for an
    unexpected error. DRF views (``api_exception_handler``) and the async views
    (``error_response``) both answer through here."""
    if isinstance(exc, ApplicationError):
        body = error_body(exc.message, type=exc.type, code=exc.code, param=exc.param)
        return exc.status_code, body, error_headers(exc)
    if isinstance(exc, OUTAGES):
        # A dependency is down: the client should come back, not report a bug.
        logger.error("dependency unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
        message = "The service is temporarily unavailable; please retry shortly."
        body = error_body(message, type="server_error", code="service_unavailable")
        return 503, body, {"Retry-After": str(OUTAGE_RETRY_AFTER_S)}
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        message = f"The request body is larger than the {limit} bytes this server accepts."
        return 413, error_body(message, type="invalid_request_error", code="request_too_large"), {}
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.ValidationError):
        param, message = first_validation_error(exc.detail)
        body = error_body(
            message, type="invalid_request_error", code="invalid_request_error", param=param
        )
        return 400, body, {}
    if isinstance(exc, exceptions.APIException):
        status_code, type_, code = _DRF_CODES.get(
            type(exc), (exc.status_code, "invalid_request_error", exc.default_code)
        )
        message = (
            str(exc.detail) if not isinstance(exc.detail, (dict, list)) else exc.default_detail
        )
        headers = {}
        if status_code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        wait = getattr(exc, "wait", None)
        if wait is not None:
            headers["Retry-After"] = str(int(wait) + 1)
        return status_code, error_body(str(message), type=type_, code=code), headers
    return None


def api_exception_handler(exc, context):
    """DRF exception handler: map every error to the one error shape."""
    answer = error_answer(exc)
    if answer is None:
        return None  # An unexpected error: Django logs it and answers through handler500.
    status_code, body, headers = answer
    return Response(body, status=status_code, headers=headers)


def error_headers(exc: ApplicationError) -> dict[str, str]:
    """Headers an error carries: rate-limit state and retry-after, or the auth challenge."""
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return headers


def error_response(exc: Exception, headers: dict[str, str] | None = None) -> JsonResponse | None:
    """The error shape as a plain Django response, for views outside DRF (the async ones);
    None for an unexpected error, which the caller re-raises."""
    answer = error_answer(exc)
    if answer is None:
        return None
    status_code, body, own_headers = answer
    return JsonResponse(body, status=status_code, headers={**own_headers, **(headers or {})})


def _json_error(status_code: int, message: str, type_: str, code: str) -> JsonResponse:
    return JsonResponse(error_body(message, type=type_, code=code), status=status_code)


_ERROR_PAGES = {
    400: ("Your request could not be read.", "invalid_request_error", "invalid_request_error"),
    404: ("The requested resource was not found.", "invalid_request_error", "not_found"),
    413: ("The request body is too large.", "invalid_request_error", "request_too_large"),
    500: (
        "The server had an error while processing your request.",
        "server_error",
        "internal_error",
    ),
}


def error_page_response(status_code: int) -> JsonResponse:
    """The error shape for a status Django would answer with a page of its own."""
    default = _ERROR_PAGES[500] if status_code >= 500 else _ERROR_PAGES[400]
    message, type_, code = _ERROR_PAGES.get(status_code, default)
    return _json_error(status_code, message, type_, code)


def handler404(request, exception=None):
    return error_page_response(404)


def handler500(request):
    return error_page_response(500)
