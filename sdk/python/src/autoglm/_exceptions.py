"""Typed exceptions for every way a call can fail, all under :class:`AutoGLMError`.

The server answers every error in one shape, ``{"error": {"message", "type", "param", "code"}}``;
each exception carries those fields plus the HTTP status and the ``x-request-id`` of the response
(quote it when reporting a problem: the server logs it as ``trace_id``).
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "AutoGLMError",
    "BadRequestError",
    "ConflictError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "ServerError",
    "ValidationError",
]


class AutoGLMError(Exception):
    """Base of every error the SDK raises.

    Attributes:
        message: human-readable description (the server's ``error.message`` when it sent one).
        status_code: the HTTP status, or ``None`` when there was no error response (a failure
            reported inside a stream or a job, a connection problem, a client-side check).
        code: the server's machine-readable ``error.code`` (``"invalid_api_key"``,
            ``"model_not_found"``, ``"rate_limit_exceeded"``...), or ``None``.
        param: the request field at fault (``"temperature"``, ``"messages[0].role"``), or
            ``None``.
        type: the server's ``error.type`` (``"invalid_request_error"``, ``"server_error"``...).
        request_id: the response's ``x-request-id`` header, or ``None``.
        body: the decoded response body, when there was one.
        response: the :class:`httpx.Response`, when there was one.
        job: the failed job, for an error a job ended with (``sessions.send(wait=True)``).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        request_id: str | None = None,
        body: Any = None,
        response: httpx.Response | None = None,
        job: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.param = param
        self.type = type
        self.request_id = request_id
        self.body = body
        self.response = response
        self.job = job

    def __str__(self) -> str:
        details = [
            f"{name}={value}"
            for name, value in (
                ("status", self.status_code),
                ("code", self.code),
                ("param", self.param),
                ("request_id", self.request_id),
            )
            if value is not None
        ]
        return f"{self.message} ({', '.join(details)})" if details else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status_code={self.status_code!r}, "
            f"code={self.code!r})"
        )


class APIStatusError(AutoGLMError):
    """The server answered with an error (or reported one inside a stream or a job).

    ``retry_after`` is the wait in seconds the server asked for (``retry-after``), or ``None``.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class BadRequestError(APIStatusError):
    """400: the request is invalid; ``param`` names the field at fault."""


class ValidationError(BadRequestError, ValueError):
    """A parameter failed the SDK's own checks; nothing was sent (``status_code`` is ``None``)."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing, malformed, unknown, revoked or expired."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not do this (e.g. ``tenant_suspended``, or a model it may not use)."""


class NotFoundError(APIStatusError):
    """404: no such resource (``not_found``) or model (``model_not_found``)."""


class ConflictError(APIStatusError):
    """409: the resource is in a state that does not allow this."""


class RateLimitError(APIStatusError):
    """429: over a rate limit; ``retry_after`` is the server's ``retry-after`` in seconds."""


class QuotaExceededError(RateLimitError):
    """429 ``insufficient_quota``: the organisation's token quota is spent. Never retried."""


class ServerError(APIStatusError):
    """5xx: the server (or a gateway in front of it) failed; also a generation that failed."""


class APIConnectionError(AutoGLMError):
    """The server could not be reached, or the connection dropped before the answer was whole.

    ``retryable`` says whether another try could succeed; ``request_sent`` whether the request
    got out (then a POST may have been processed, and the SDK does not send it again).
    """

    def __init__(
        self, message: str, *, retryable: bool = False, request_sent: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.retryable = retryable
        self.request_sent = request_sent


class APITimeoutError(APIConnectionError):
    """Connecting, sending or waiting for the answer took longer than the configured timeout."""
