# The source of its synchronous twin: edit this file, then run scripts/unasync.py.
"""The asyncio client: :class:`AsyncAutoGLMClient`, its transport (retries, the typed errors)
and chat; its ``sessions``, ``jobs`` and ``models`` are in :mod:`.resources`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, overload

import httpx

from .._core import (
    ClientConfig,
    chat_response,
    connection_error,
    decode_json,
    error_from_response,
    idempotency_headers,
    is_safe_to_resend,
    json_object,
    key_header,
    new_request_id,
    per_call_timeout,
)
from .._exceptions import AutoGLMError
from .._types import ChatMessage, ChatResponse
from .._validation import chat_body
from .resources import AsyncJobs, AsyncModels, AsyncSessions, AsyncShares
from .stream import AsyncChatStream

__all__ = ["AsyncAutoGLMClient"]


class AsyncAutoGLMClient:
    """Client of an autoglm server: OpenAI-compatible chat plus the native sessions and jobs.

    Args:
        api_key: ``sk-...``; defaults to the ``AUTOGLM_API_KEY`` environment variable.
        base_url: the server's root, e.g. ``http://127.0.0.1:8000``; defaults to
            ``AUTOGLM_BASE_URL``, then to ``http://127.0.0.1:8000``. A trailing ``/v1`` (as given
            to OpenAI clients) is dropped.
        timeout: a number (seconds, every phase) or an :class:`httpx.Timeout`; when given it
            replaces ``connect_timeout`` and ``read_timeout``.
        connect_timeout: seconds to establish a connection (and to send the request).
        read_timeout: seconds to wait for data; for a non-streamed chat, the whole generation.
        max_retries: retries after the first attempt, 0 to 2 (at most 3 attempts in all).
        backoff_base: first backoff in seconds; it doubles each retry, with jitter.
        backoff_max: the longest backoff in seconds.
        max_retry_after: a ``retry-after`` longer than this many seconds is not waited for: the
            error is raised at once.
        default_headers: extra headers for every request.
        http_client: an :class:`httpx.AsyncClient` to use (proxies, certificates...); its own
            timeout is then overridden per request, and the SDK does not close it.

    Use it as a context manager (``async with``), or call :meth:`close`, to release its connections.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = None,
        connect_timeout: float | None = 10.0,
        read_timeout: float | None = 600.0,
        max_retries: int = 2,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 60.0,
        default_headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._config = ClientConfig.build(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            max_retry_after=max_retry_after,
            default_headers=default_headers,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=self._config.timeout)
        self.sessions = AsyncSessions(self)
        self.shares = AsyncShares(self)
        self.jobs = AsyncJobs(self)
        self.models = AsyncModels(self)

    @property
    def base_url(self) -> str:
        """The server root requests go to."""
        return self._config.base_url

    @property
    def api_key(self) -> str:
        return self._config.api_key

    @property
    def max_retries(self) -> int:
        return self._config.retry.max_retries

    def __repr__(self) -> str:
        return f"AsyncAutoGLMClient(base_url={self.base_url!r})"

    async def close(self) -> None:
        """Close the connections (not those of an ``http_client`` that was passed in)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncAutoGLMClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _cancel_completion(self, completion_id: str) -> None:
        """Cancel the job behind an abandoned stream (``chatcmpl-<job id hex>``)."""
        await self.jobs.cancel(str(uuid.UUID(completion_id.removeprefix("chatcmpl-"))))

    # -- transport ---------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send with retries; return a successful response or raise the typed error.

        With ``stream=True`` the body is left unread. Once a successful response has arrived,
        nothing is retried: a stream that breaks later raises to the caller.
        """
        request_id = new_request_id()
        policy = self._config.retry
        request_headers = {
            **self._config.headers,
            "Accept": "application/json",
            "x-request-id": request_id,
            **(headers or {}),
        }
        # One key for the call, sent on each of its tries: a retry never creates twice.
        request_headers.update(idempotency_headers(method, request_headers))
        idempotent = is_safe_to_resend(method, request_headers)
        query = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            attempt += 1
            request: httpx.Request | None = None
            try:
                request = self._http.build_request(
                    method,
                    self._config.url(path),
                    json=json,
                    params=query or None,
                    headers=request_headers,
                    timeout=per_call_timeout(timeout) or self._config.timeout,
                )
                response = await self._http.send(request, stream=stream)
            except httpx.HTTPError as exc:
                error: AutoGLMError = connection_error(exc, request, request_id)
                error.__cause__ = exc
            else:
                if response.is_success:
                    return response
                try:
                    await response.aread()
                except httpx.HTTPError:
                    pass
                finally:
                    await response.aclose()
                error = error_from_response(response)
            delay = policy.delay(attempt, error, idempotent=idempotent)
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout | None = None,
    ) -> Any:
        """Call any endpoint (``path`` from the server root, e.g. ``"/api/v1/sessions"``) with
        the client's authentication, retries and error mapping; return the decoded JSON.

        Nothing is checked before sending: this is also the way around the SDK's validation.
        """
        response = await self._send(
            method, path, json=json, params=params, headers=headers, timeout=timeout
        )
        return decode_json(response)

    async def _object(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """:meth:`request` for an endpoint that answers a JSON object."""
        headers = key_header(idempotency_key)
        answer = await self.request(method, path, json=json, params=params, headers=headers)
        return json_object(answer)

    # -- chat --------------------------------------------------------------------------------

    @overload
    async def chat(
        self,
        messages: Sequence[ChatMessage | Mapping[str, Any]],
        model: str,
        *,
        temperature: float | None = ...,
        max_tokens: int | None = ...,
        top_p: float | None = ...,
        stop: str | Sequence[str] | None = ...,
        seed: int | None = ...,
        user: str | None = ...,
        stream: Literal[False] = ...,
        extra_body: Mapping[str, Any] | None = ...,
        timeout: float | httpx.Timeout | None = ...,
        idempotency_key: str | None = ...,
    ) -> ChatResponse: ...

    @overload
    async def chat(
        self,
        messages: Sequence[ChatMessage | Mapping[str, Any]],
        model: str,
        *,
        temperature: float | None = ...,
        max_tokens: int | None = ...,
        top_p: float | None = ...,
        stop: str | Sequence[str] | None = ...,
        seed: int | None = ...,
        user: str | None = ...,
        stream: Literal[True],
        extra_body: Mapping[str, Any] | None = ...,
        timeout: float | httpx.Timeout | None = ...,
        idempotency_key: str | None = ...,
    ) -> AsyncChatStream: ...

    async def chat(
        self,
        messages: Sequence[ChatMessage | Mapping[str, Any]],
        model: str,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        user: str | None = None,
        stream: bool = False,
        extra_body: Mapping[str, Any] | None = None,
        timeout: float | httpx.Timeout | None = None,
        idempotency_key: str | None = None,
    ) -> ChatResponse | AsyncChatStream:
        """Run a chat completion (``POST /v1/chat/completions``).

        Args:
            messages: the conversation, ``[{"role": "user", "content": "..."}]``; roles are
                ``system``, ``developer``, ``user`` and ``assistant``.
            model: the model's name, as ``client.models.list()`` gives it.
            temperature: 0 to 2. top_p: greater than 0, at most 1. max_tokens: at least 1.
            stop: a string or up to 4 at which the answer ends. seed: for reproducible samples.
            user: an end-user id for the server's logs.
            stream: return a :class:`AsyncChatStream` of text deltas instead of the whole answer.
            extra_body: fields merged into the JSON body as they are, unchecked.
            timeout: this call's timeout (a number for every phase, or an ``httpx.Timeout``).
            idempotency_key: the call's ``Idempotency-Key`` (1 to 255 printable ASCII
                characters); by default a new one per call. Each retry sends the same, so the
                server answers it with the same job; pass your own to make a call again later
                (within 24 hours) and get the first one's answer.

        Returns:
            ``{"content", "finish_reason", "usage", "id", "model", "raw"}``; or, with
            ``stream=True``, a :class:`AsyncChatStream`.

        Raises:
            ValidationError: a parameter breaks a documented rule; nothing was sent.
            AutoGLMError: the typed error of the server's answer or of the connection.
        """
        body = chat_body(
            messages=messages,
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            top_p=top_p,
            stop=stop,
            seed=seed,
            user=user,
            stream=stream,
            extra_body=extra_body,
        )
        key = key_header(idempotency_key)
        if not stream:
            return chat_response(  # type: ignore[return-value]
                await self.request(
                    "POST", "/v1/chat/completions", json=body, headers=key, timeout=timeout
                )
            )
        response = await self._send(
            "POST",
            "/v1/chat/completions",
            json=body,
            headers={"Accept": "text/event-stream", **key},
            timeout=timeout,
            stream=True,
        )
        return AsyncChatStream(response, on_abandon=self._cancel_completion)
