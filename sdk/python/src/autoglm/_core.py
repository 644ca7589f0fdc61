"""What the sync and async clients share: configuration, error mapping, the retry policy, and
the parsing of server-sent events. Nothing here does I/O."""

from __future__ import annotations

import email.utils
import json
import os
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    AutoGLMError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from ._types import JobEvent
from ._version import __version__

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
MAX_ATTEMPTS = 3  # the first try and at most two retries, whatever the configuration
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
FINAL_JOB_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
FINAL_EVENTS = frozenset({"done", "error"})


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a request again.

    A request is tried at most ``max_retries + 1`` times (3 at most). It is tried again after a
    connection error, a timeout, ``429 rate_limit_exceeded`` (never ``insufficient_quota``),
    ``409 idempotency_key_in_flight``, 502, 503 or 504. A POST creates things (a chat creates a
    job), so every POST carries an ``Idempotency-Key``, the same on each try of one call: the
    server answers a retry with the first try's answer (the same job) and creates nothing
    twice, so a POST is retried like a GET. A request without such a key that is not idempotent
    (a PATCH, or a POST whose key the caller removed) is tried again only when it cannot have
    been processed: the connection was never made, or the server refused it (429, 503); after
    a dropped connection, a read timeout or a 502/504 it may have acted, and sending it again
    would answer and bill twice. The wait is the server's ``retry-after``
    when it sent one (a request told to wait longer than ``max_retry_after`` seconds is not
    retried), else exponential backoff with jitter: ``backoff_base * 2**(retry-1)`` capped at
    ``backoff_max``, of which a random 0..50% is taken off.
    """

    max_retries: int = 2
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.max_retries <= MAX_ATTEMPTS - 1:
            raise ValueError(f"max_retries must be between 0 and {MAX_ATTEMPTS - 1}.")
        if self.backoff_base < 0 or self.backoff_max < 0 or self.max_retry_after < 0:
            raise ValueError("backoff_base, backoff_max and max_retry_after must not be negative.")

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def backoff(self, retry: int) -> float:
        """The jittered exponential wait before retry number ``retry`` (1, 2, ...)."""
        delay = min(self.backoff_max, self.backoff_base * 2.0 ** (retry - 1))
        return delay * (1 - random.random() / 2)

    def delay(self, attempt: int, error: AutoGLMError, *, idempotent: bool = True) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` when ``error`` is final."""
        if attempt >= self.max_attempts or not is_retryable(error):
            return None
        if not idempotent and not was_refused_unprocessed(error):
            return None
        retry_after = error.retry_after if isinstance(error, APIStatusError) else None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        return self.backoff(attempt)


IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
REFUSED_STATUSES = frozenset({429, 503})  # the server refused the request: nothing was done
IDEMPOTENCY_HEADER = "Idempotency-Key"
KEYED_METHODS = frozenset({"POST"})  # the methods that get an Idempotency-Key of their own


def new_idempotency_key() -> str:
    """An ``Idempotency-Key`` for one logical call, kept across its retries."""
    return f"idem_{uuid.uuid4().hex}"


def idempotency_headers(method: str, headers: Mapping[str, str]) -> dict[str, str]:
    """The key to add to a call's headers: a new one for a POST that has none (a caller's own
    key, in any letter case, wins), else nothing."""
    if method not in KEYED_METHODS:
        return {}
    if any(name.lower() == IDEMPOTENCY_HEADER.lower() for name in headers):
        return {}
    return {IDEMPOTENCY_HEADER: new_idempotency_key()}


def key_header(idempotency_key: str | None) -> dict[str, str]:
    """A caller's own ``Idempotency-Key`` as a header (none: the client makes one)."""
    return {} if idempotency_key is None else {IDEMPOTENCY_HEADER: idempotency_key}


def is_safe_to_resend(method: str, headers: Mapping[str, str] | httpx.Headers) -> bool:
    """Whether sending the request twice does what sending it once does: an idempotent method,
    or a request with an Idempotency-Key (the server replays the first answer)."""
    if method in IDEMPOTENT_METHODS:
        return True
    return any(name.lower() == IDEMPOTENCY_HEADER.lower() for name in headers)


def was_refused_unprocessed(error: AutoGLMError) -> bool:
    """Whether the request certainly did nothing on the server, so even a POST may be resent."""
    if isinstance(error, APIConnectionError):
        return not error.request_sent
    return error.status_code in REFUSED_STATUSES


def is_retryable(error: AutoGLMError) -> bool:
    """Whether trying the same request again may succeed."""
    if isinstance(error, APIConnectionError):
        return error.retryable
    if isinstance(error, QuotaExceededError):
        return False
    if error.status_code == 409:
        # The first try with this Idempotency-Key is still at work; the next gets its answer.
        return error.code == "idempotency_key_in_flight"
    return error.status_code in RETRYABLE_STATUSES


@dataclass
class ClientConfig:
    """The settings a client is built with (see :class:`autoglm.AutoGLMClient`)."""

    api_key: str
    base_url: str
    timeout: httpx.Timeout
    retry: RetryPolicy
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        *,
        api_key: str | None,
        base_url: str | None,
        timeout: float | httpx.Timeout | None,
        connect_timeout: float | None,
        read_timeout: float | None,
        max_retries: int,
        backoff_base: float,
        backoff_max: float,
        max_retry_after: float,
        default_headers: Mapping[str, str] | None,
    ) -> ClientConfig:
        api_key = api_key or os.environ.get("AUTOGLM_API_KEY")
        if not api_key:
            raise AutoGLMError(
                "No API key: pass api_key= or set the AUTOGLM_API_KEY environment variable."
            )
        base_url = base_url or os.environ.get("AUTOGLM_BASE_URL") or DEFAULT_BASE_URL
        base_url = base_url.rstrip("/")
        # OpenAI clients are given ".../v1"; this client adds the API's own prefixes.
        base_url = base_url.removesuffix("/v1")
        if not base_url.startswith(("http://", "https://")):
            raise AutoGLMError(f"base_url must start with http:// or https://, got {base_url!r}.")
        headers = {
            "Authorization": f"Bearer {api_key}",
            "User-Agent": f"autoglm-python/{__version__}",
            **(default_headers or {}),
        }
        return cls(
            api_key=api_key,
            base_url=base_url,
            timeout=build_timeout(timeout, connect_timeout, read_timeout),
            retry=RetryPolicy(
                max_retries=max_retries,
                backoff_base=backoff_base,
                backoff_max=backoff_max,
                max_retry_after=max_retry_after,
            ),
            headers=headers,
        )

    def url(self, path: str) -> str:
        return self.base_url + path


def build_timeout(
    timeout: float | httpx.Timeout | None, connect: float | None, read: float | None
) -> httpx.Timeout:
    """An :class:`httpx.Timeout` from the client's arguments.

    ``timeout`` (a number: every phase; or an ``httpx.Timeout``) wins when given; else
    ``connect`` bounds establishing the connection and ``read`` each wait for data, which for a
    non-streamed chat is the whole generation.
    """
    if isinstance(timeout, httpx.Timeout):
        return timeout
    if timeout is not None:
        return httpx.Timeout(timeout)
    return httpx.Timeout(connect=connect, read=read, write=connect, pool=connect)


def per_call_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout | None:
    if timeout is None or isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout)


def path_id(value: str) -> str:
    """An id as one path segment (ids are UUIDs; anything else still cannot escape its place)."""
    if not isinstance(value, str) or not value:
        raise TypeError("An id must be a non-empty string.")
    return quote(value, safe="")


def new_request_id() -> str:
    """An ``x-request-id`` for one logical call, kept across its retries."""
    return f"req_{uuid.uuid4().hex}"


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_class(
    status_code: int | None, type_: str | None, code: str | None
) -> type[APIStatusError]:
    if code == "insufficient_quota" and status_code in (None, 429):
        return QuotaExceededError
    by_status: dict[int, type[APIStatusError]] = {
        400: BadRequestError,
        401: AuthenticationError,
        403: PermissionDeniedError,
        404: NotFoundError,
        409: ConflictError,
        422: BadRequestError,
        429: RateLimitError,
    }
    if status_code is not None:
        if status_code >= 500:
            return ServerError
        return by_status.get(status_code, APIStatusError)
    # An error reported inside a stream or a job: no status, go by type and code.
    by_code: dict[str, type[APIStatusError]] = {
        "invalid_api_key": AuthenticationError,
        "tenant_suspended": PermissionDeniedError,
        "not_found": NotFoundError,
        "model_not_found": NotFoundError,
        "rate_limit_exceeded": RateLimitError,
    }
    by_type: dict[str, type[APIStatusError]] = {
        "invalid_request_error": BadRequestError,
        "permission_error": PermissionDeniedError,
        "rate_limit_error": RateLimitError,
        "server_error": ServerError,
    }
    return by_code.get(code or "") or by_type.get(type_ or "") or APIStatusError


def error_from_payload(
    error: Any,
    *,
    status_code: int | None = None,
    request_id: str | None = None,
    body: Any = None,
    response: httpx.Response | None = None,
    retry_after: float | None = None,
    job: dict[str, Any] | None = None,
    fallback_message: str = "The server reported an error.",
) -> APIStatusError:
    """The typed exception for an error in the server's shape (the inner ``error`` object)."""
    error = error if isinstance(error, Mapping) else {}
    message = error.get("message")
    code, param, type_ = error.get("code"), error.get("param"), error.get("type")
    cls = _status_class(status_code, type_, code)
    kwargs: dict[str, Any] = {
        "status_code": status_code,
        "code": code if isinstance(code, str) else None,
        "param": param if isinstance(param, str) else None,
        "type": type_ if isinstance(type_, str) else None,
        "request_id": request_id,
        "body": body,
        "response": response,
        "job": job,
    }
    return cls(
        message if isinstance(message, str) and message else fallback_message,
        retry_after=retry_after,
        **kwargs,
    )


def error_from_response(response: httpx.Response) -> APIStatusError:
    """The typed exception for an HTTP error response (its body already read)."""
    try:
        body: Any = response.json()
    except (ValueError, UnicodeDecodeError):
        body = response.text
    error = body.get("error") if isinstance(body, Mapping) else None
    snippet = body if isinstance(body, str) else ""
    return error_from_payload(
        error,
        status_code=response.status_code,
        request_id=response.headers.get("x-request-id"),
        body=body,
        response=response,
        retry_after=parse_retry_after(response.headers),
        fallback_message=(
            f"HTTP {response.status_code} {response.reason_phrase}: {snippet[:200]}".rstrip(": ")
        ),
    )


def error_from_job(job: dict[str, Any]) -> APIStatusError:
    """The typed exception for a job that ended ``failed`` (the job is on ``.job``)."""
    return error_from_payload(job.get("error"), job=job, fallback_message="The job failed.")


def connection_error(
    exc: Exception, request: httpx.Request | None, request_id: str | None = None
) -> APIConnectionError:
    """An :class:`APIConnectionError` (or :class:`APITimeoutError`) for an httpx failure.

    ``retryable`` is set for what another try may fix: timeouts, network errors and a server
    that dropped the connection; not for a malformed URL or an unsupported scheme, and not for
    a request that may have been processed and is not safe to resend (see :class:`RetryPolicy`).
    """
    where = f"{request.method} {request.url}" if request is not None else "the request"
    # Before the connection was made, nothing was sent; after, the server may have acted on it.
    sent = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    maybe = ""
    if sent and request is not None and not is_safe_to_resend(request.method, request.headers):
        maybe = " The request may have been processed; it was not sent again."
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(
            f"Timed out on {where} ({type(exc).__name__}).{maybe}",
            request_id=request_id,
            retryable=not maybe,
            request_sent=sent,
        )
    return APIConnectionError(
        f"Connection failed on {where}: {exc or type(exc).__name__}.{maybe}",
        request_id=request_id,
        retryable=not maybe and isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError)),
        request_sent=sent,
    )


def json_object(value: Any, response: httpx.Response | None = None) -> dict[str, Any]:
    """``value`` if it is a JSON object, else the error of an answer that makes no sense."""
    if not isinstance(value, dict):
        raise AutoGLMError(
            "The server's answer is not a JSON object.",
            status_code=response.status_code if response is not None else None,
            body=value,
            response=response,
        )
    return value


def decode_json(response: httpx.Response) -> Any:
    """A successful response's JSON body (``None`` for an empty one, as a 204)."""
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise AutoGLMError(
            f"The server answered {response.status_code} with a body that is not JSON.",
            status_code=response.status_code,
            request_id=response.headers.get("x-request-id"),
            body=response.text,
            response=response,
        ) from exc


@dataclass
class ServerSentEvent:
    """One dispatched SSE event."""

    data: str
    event: str | None = None
    id: str | None = None


class SSEDecoder:
    """Incremental server-sent events parser, fed one line at a time (line ends removed).

    Follows the HTML spec: ``data`` lines are joined with newlines, comments (``:``) are
    skipped, an event is dispatched on a blank line if it has data, ``retry`` sets
    :attr:`retry_ms`, and :attr:`last_event_id` is the id to resume after.
    """

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None

    def decode(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._data:
                self._event = None
                return None
            event = ServerSentEvent("\n".join(self._data), self._event, self.last_event_id)
            self._data, self._event = [], None
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self.last_event_id = value or None
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


def job_event(sse: ServerSentEvent) -> JobEvent:
    """A job's SSE event as a :class:`JobEvent` dict (JSON data decoded)."""
    try:
        data: Any = json.loads(sse.data)
    except ValueError:
        data = sse.data
    return {"id": sse.id, "event": sse.event or "message", "data": data}


class ChatStreamState:
    """Folds ``chat.completion.chunk`` frames into text deltas and the final metadata."""

    def __init__(self, request_id: str | None) -> None:
        self.request_id = request_id
        self.id: str | None = None
        self.model: str | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, int] | None = None
        self.parts: list[str] = []
        self.done = False

    def feed(self, sse: ServerSentEvent) -> str | None:
        """Take one event; return its text delta, if any. Raises the error a frame reports."""
        if sse.data == "[DONE]":
            self.done = True
            return None
        try:
            chunk = json.loads(sse.data)
        except ValueError as exc:
            raise AutoGLMError(
                f"The stream sent a frame that is not JSON: {sse.data[:200]!r}",
                request_id=self.request_id,
            ) from exc
        if not isinstance(chunk, Mapping):
            return None
        if "error" in chunk:
            raise error_from_payload(chunk["error"], request_id=self.request_id, body=chunk)
        self.id = chunk.get("id") or self.id
        self.model = chunk.get("model") or self.model
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        text = None
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            content = (choice.get("delta") or {}).get("content")
            if content:
                self.parts.append(content)
                text = content
        return text

    @property
    def content(self) -> str:
        return "".join(self.parts)

    def unfinished(self) -> APIConnectionError:
        return APIConnectionError(
            "The stream ended before its end marker ([DONE]).", request_id=self.request_id
        )


def chat_response(body: Any) -> dict[str, Any]:
    """The dict :meth:`chat` returns, from a ``chat.completion`` body."""
    try:
        choice = body["choices"][0]
        return {
            "content": choice["message"].get("content") or "",
            "finish_reason": choice.get("finish_reason"),
            "usage": body.get("usage"),
            "id": body["id"],
            "model": body.get("model"),
            "raw": body,
        }
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise AutoGLMError("The server's answer is not a chat completion.", body=body) from exc


def event_stream_headers(last_event_id: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return headers


def job_wait_timeout(job: dict[str, Any], timeout: float) -> APITimeoutError:
    return APITimeoutError(
        f"Job {job.get('id')} is still {job.get('status')} after {timeout:g}s.", job=job
    )


def poll_intervals(first: float) -> Any:
    """Polling waits: ``first`` growing by half each time up to 2 seconds."""
    wait = first
    while True:
        yield wait
        wait = min(max(wait * 1.5, first), 2.0)
