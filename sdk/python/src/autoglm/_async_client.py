# The source of _client.py, the synchronous client: after an edit, run scripts/unasync.py.
"""The asyncio client: :class:`AsyncAutoGLMClient` and its ``sessions``, ``jobs`` and
``models``."""

from __future__ import annotations

import asyncio
import builtins
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, overload

import httpx

from ._core import (
    FINAL_EVENTS,
    FINAL_JOB_STATUSES,
    ChatStreamState,
    ClientConfig,
    SSEDecoder,
    chat_response,
    connection_error,
    decode_json,
    error_from_job,
    error_from_response,
    event_stream_headers,
    job_event,
    job_wait_timeout,
    json_object,
    new_request_id,
    path_id,
    per_call_timeout,
    poll_intervals,
)
from ._exceptions import APIConnectionError, AutoGLMError
from ._types import ChatMessage, ChatResponse, JobEvent, Usage
from ._validation import chat_body, check_text, sampling_params

__all__ = ["AsyncAutoGLMClient", "AsyncChatStream", "AsyncJobs", "AsyncModels", "AsyncSessions"]


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
            delay = policy.delay(attempt, error)
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
    ) -> dict[str, Any]:
        """:meth:`request` for an endpoint that answers a JSON object."""
        return json_object(await self.request(method, path, json=json, params=params))

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
        if not stream:
            return chat_response(  # type: ignore[return-value]
                await self.request("POST", "/v1/chat/completions", json=body, timeout=timeout)
            )
        response = await self._send(
            "POST",
            "/v1/chat/completions",
            json=body,
            headers={"Accept": "text/event-stream"},
            timeout=timeout,
            stream=True,
        )
        return AsyncChatStream(response, on_abandon=self._cancel_completion)


class AsyncChatStream:
    """The text deltas of a streamed chat, as they are generated.

    Iterate it (``async for delta in stream``) for the text (``str``) pieces. When the stream is
    over its metadata is set: :attr:`usage`, :attr:`finish_reason`, :attr:`id`, :attr:`model`, and
    :attr:`content` (all the text). The iteration of the synchronous :class:`autoglm.ChatStream`
    also ends with the usage as its return value, so ``usage = yield from stream`` works in a
    generator.

    A failure reported by the server mid-stream raises its typed error; a connection that drops
    raises :class:`APIConnectionError`. A stream is never retried once it has begun. Leaving
    early (``break`` then :meth:`close`, or leaving its ``async with`` block) closes the
    connection, which cancels the generation on the server.
    """

    def __init__(
        self, response: httpx.Response, on_abandon: Callable[[str], Any] | None = None
    ) -> None:
        self.response = response
        # Called with the completion id when the stream is closed before its end: the client
        # asks the server to cancel the job too, as a closed connection may not reach it (a
        # proxy in between can keep its own connection to the server open).
        self._on_abandon = on_abandon
        self.request_id: str | None = response.headers.get("x-request-id")
        self._state = ChatStreamState(self.request_id)
        self._decoder = SSEDecoder()
        self._lines = response.aiter_lines()
        self._closed = False

    @property
    def id(self) -> str | None:
        return self._state.id

    @property
    def model(self) -> str | None:
        return self._state.model

    @property
    def finish_reason(self) -> str | None:
        return self._state.finish_reason

    @property
    def usage(self) -> Usage | None:
        return self._state.usage  # type: ignore[return-value]

    @property
    def content(self) -> str:
        """The text received so far (all of it once the stream is over)."""
        return self._state.content

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        if self._state.done or self._closed:
            raise StopAsyncIteration
        try:
            async for line in self._lines:
                event = self._decoder.decode(line)
                if event is None:
                    continue
                delta = self._state.feed(event)
                if self._state.done:
                    break
                if delta:
                    return delta
            else:
                raise self._state.unfinished()
        except httpx.HTTPError as exc:
            await self.close()
            raise connection_error(exc, self.response.request, self.request_id) from exc
        except BaseException:
            await self.close()
            raise
        await self.close()
        raise StopAsyncIteration

    async def close(self) -> None:
        """Close the connection (before the end, this cancels the generation)."""
        if not self._closed:
            self._closed = True
            await self.response.aclose()
            if not self._state.done and self._state.id and self._on_abandon is not None:
                try:
                    await self._on_abandon(self._state.id)
                except (AutoGLMError, ValueError):
                    pass  # best effort: the server also cancels on the closed connection

    async def __aenter__(self) -> AsyncChatStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class AsyncSessions:
    """Native chat sessions (``/api/v1/sessions``): server-side history, answered by jobs."""

    def __init__(self, client: AsyncAutoGLMClient) -> None:
        self._client = client

    async def create(
        self,
        *,
        title: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a session. ``params`` are default sampling parameters for its messages
        (``max_tokens``, ``temperature``, ``top_p``, ``seed``); ``model`` defaults to the
        server's default model."""
        body: dict[str, Any] = {
            k: v
            for k, v in (("title", title), ("model", model), ("system_prompt", system_prompt))
            if v is not None
        }
        if params is not None:
            body["params"] = {**params, **sampling_params(**_session_params(params))}
        return await self._client._object("POST", "/api/v1/sessions", json=body)

    async def list(self, *, limit: int | None = None, after: str | None = None) -> dict[str, Any]:
        """One page of the sessions, newest first: ``{"object": "list", "data", "has_more",
        "first_id", "last_id"}``; pass ``after=page["last_id"]`` for the next page."""
        return await self._client._object(
            "GET", "/api/v1/sessions", params={"limit": limit, "after": after}
        )

    async def iterate(self, *, page_size: int = 100) -> AsyncIterator[dict[str, Any]]:
        """Every session, newest first, fetching pages as needed."""
        after = None
        while True:
            page = await self.list(limit=page_size, after=after)
            for session in page["data"]:
                yield session
            if not page.get("has_more") or not page.get("last_id"):
                return
            after = page["last_id"]

    async def get(self, session_id: str) -> dict[str, Any]:
        """One session."""
        return await self._client._object("GET", f"/api/v1/sessions/{path_id(session_id)}")

    async def update(
        self,
        session_id: str,
        *,
        title: str | None = None,
        system_prompt: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Rename a session or change its system prompt or default parameters."""
        body: dict[str, Any] = {
            k: v for k, v in (("title", title), ("system_prompt", system_prompt)) if v is not None
        }
        if params is not None:
            body["params"] = {**params, **sampling_params(**_session_params(params))}
        return await self._client._object(
            "PATCH",
            f"/api/v1/sessions/{path_id(session_id)}",
            json=body,
        )

    async def delete(self, session_id: str) -> None:
        """Delete a session with its messages and jobs."""
        await self._client.request("DELETE", f"/api/v1/sessions/{path_id(session_id)}")

    async def messages(
        self, session_id: str, *, limit: int | None = None, after: str | None = None
    ) -> dict[str, Any]:
        """One page of a session's history, oldest first."""
        return await self._client._object(
            "GET",
            f"/api/v1/sessions/{path_id(session_id)}/messages",
            params={"limit": limit, "after": after},
        )

    async def send(
        self,
        session_id: str,
        content: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        wait: bool = True,
        timeout: float | None = 600.0,
        poll_interval: float = 0.2,
    ) -> dict[str, Any]:
        """Post a user message; the answer is generated by a job.

        With ``wait=True`` (the default) wait for the job to end and return it: its
        ``message["content"]`` is the answer, ``usage`` the token counts; a cancelled job is
        returned too (with its partial answer). With ``wait=False`` return the queued job at
        once, to follow with ``client.jobs.events(job["id"])``.

        Raises:
            ValidationError: a parameter breaks a documented rule; nothing was sent.
            AutoGLMError: the typed error of a job that failed (the job on ``.job``), or of the
                request; :class:`APITimeoutError` if it is still running after ``timeout``.
        """
        check_text(content, "content")
        body = {
            "content": content,
            **sampling_params(
                max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed
            ),
        }
        job = await self._client._object(
            "POST", f"/api/v1/sessions/{path_id(session_id)}/messages", json=body
        )
        if not wait:
            return job
        return await self._client.jobs.wait(job["id"], timeout=timeout, poll_interval=poll_interval)


def _session_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: params.get(k) for k in ("max_tokens", "temperature", "top_p", "seed")}


class AsyncJobs:
    """Jobs (``/api/v1/jobs``): one generation each, queued to the model's workers."""

    def __init__(self, client: AsyncAutoGLMClient) -> None:
        self._client = client

    async def get(self, job_id: str) -> dict[str, Any]:
        """The job: ``status`` is ``queued``, ``running``, ``succeeded``, ``failed`` (with
        ``error``) or ``cancelled``; once ended, ``message`` and ``usage``."""
        return await self._client._object("GET", f"/api/v1/jobs/{path_id(job_id)}")

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel the job: a queued one ends at once, a running one at its next step."""
        return await self._client._object("POST", f"/api/v1/jobs/{path_id(job_id)}/cancel")

    async def wait(
        self, job_id: str, *, timeout: float | None = 600.0, poll_interval: float = 0.2
    ) -> dict[str, Any]:
        """Poll until the job ends and return it; raise the job's typed error if it failed.

        Raises :class:`APITimeoutError` (with the job on ``.job``) if it is still going after
        ``timeout`` seconds (``None``: no limit).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for wait in poll_intervals(poll_interval):
            job = await self.get(job_id)
            if job.get("status") in FINAL_JOB_STATUSES:
                if job["status"] == "failed":
                    raise error_from_job(job)
                return job
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise job_wait_timeout(job, timeout or 0)
                wait = min(wait, left)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def events(
        self, job_id: str, *, last_event_id: str | None = None, reconnect: bool = True
    ) -> AsyncIterator[JobEvent]:
        """Follow the job's events: ``{"id", "event", "data"}`` dicts, ending after the final
        ``done`` or ``error`` event (which is yielded, not raised).

        ``token`` events carry ``{"text"}``; a ``reset`` means the worker restarted the
        generation and the text so far is void. A late subscriber gets everything from the
        start; ``last_event_id`` starts after that event instead. If the connection drops, the
        stream is reopened after the last event received (``Last-Event-ID``), so nothing is
        lost or repeated, up to ``max_retries`` times in a row without progress
        (``reconnect=False``: raise at once). Closing the iterator does not cancel the job.
        """
        path = f"/api/v1/jobs/{path_id(job_id)}/events"
        policy = self._client._config.retry
        last = last_event_id
        failures = 0
        while True:
            response = await self._client._send(
                "GET", path, headers=event_stream_headers(last), stream=True
            )
            decoder = SSEDecoder()
            request_id = response.headers.get("x-request-id")
            try:
                async for line in response.aiter_lines():
                    sse = decoder.decode(line)
                    if sse is None:
                        continue
                    failures = 0
                    last = sse.id or last
                    event = job_event(sse)
                    yield event
                    if event["event"] in FINAL_EVENTS:
                        return
                error: APIConnectionError = APIConnectionError(
                    "The event stream ended before the job's final event.",
                    request_id=request_id,
                    retryable=True,
                )
            except httpx.HTTPError as exc:
                error = connection_error(exc, response.request, request_id)
            finally:
                await response.aclose()
            if not reconnect or not error.retryable or failures >= policy.max_retries:
                raise error
            failures += 1
            delay = policy.backoff(failures)
            if decoder.retry_ms is not None:
                delay = min(decoder.retry_ms / 1000, policy.backoff_max)
            await asyncio.sleep(delay)


class AsyncModels:
    """The models this key may use (``/v1/models``)."""

    def __init__(self, client: AsyncAutoGLMClient) -> None:
        self._client = client

    async def list(self) -> builtins.list[dict[str, Any]]:
        """``[{"id", "object", "created", "owned_by"}, ...]``."""
        page = await self._client._object("GET", "/v1/models")
        return builtins.list(page.get("data") or [])

    async def get(self, model: str) -> dict[str, Any]:
        """One model; :class:`NotFoundError` if there is none by that name for this key."""
        return await self._client._object("GET", f"/v1/models/{path_id(model)}")
