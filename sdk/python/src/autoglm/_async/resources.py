# The source of its synchronous twin: edit this file, then run scripts/unasync.py.
"""The asyncio client's ``sessions``, ``jobs`` and ``models``."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from .._core import (
    FINAL_EVENTS,
    FINAL_JOB_STATUSES,
    SSEDecoder,
    connection_error,
    error_from_job,
    event_stream_headers,
    job_event,
    job_wait_timeout,
    path_id,
    poll_intervals,
)
from .._exceptions import APIConnectionError
from .._types import JobEvent
from .._validation import check_text, sampling_params

if TYPE_CHECKING:
    from .client import AsyncAutoGLMClient

__all__ = ["AsyncJobs", "AsyncModels", "AsyncSessions"]


# ``parent_id`` left out of ``send``: the message follows the session's current message.
FOLLOW_CURRENT = "current"


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
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Create a session. ``params`` are default sampling parameters for its messages
        (``max_tokens``, ``temperature``, ``top_p``, ``seed``); ``model`` defaults to the
        server's default model. ``idempotency_key``: as for :meth:`chat` (one per call by
        default, the same on its retries)."""
        body: dict[str, Any] = {
            k: v
            for k, v in (("title", title), ("model", model), ("system_prompt", system_prompt))
            if v is not None
        }
        if params is not None:
            body["params"] = {**params, **sampling_params(**_session_params(params))}
        return await self._client._object(
            "POST", "/api/v1/sessions", json=body, idempotency_key=idempotency_key
        )

    async def list(
        self,
        *,
        limit: int | None = None,
        after: str | None = None,
        archived: bool | None = None,
        tag: str | None = None,
    ) -> dict[str, Any]:
        """One page of the sessions, newest first: ``{"object": "list", "data", "has_more",
        "first_id", "last_id"}``; pass ``after=page["last_id"]`` for the next page. Only the
        archived (or not archived) ones with ``archived``, only those tagged ``tag``."""
        flag = None if archived is None else ("true" if archived else "false")
        return await self._client._object(
            "GET",
            "/api/v1/sessions",
            params={"limit": limit, "after": after, "archived": flag, "tag": tag},
        )

    async def iterate(
        self, *, page_size: int = 100, archived: bool | None = None, tag: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every session (with ``archived`` and ``tag`` as for :meth:`list`), newest first,
        fetching pages as needed."""
        after = None
        while True:
            page = await self.list(limit=page_size, after=after, archived=archived, tag=tag)
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
        current_message_id: str | None = None,
        pinned: bool | None = None,
        archived: bool | None = None,
        tags: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Rename a session, change its system prompt or default parameters, show the branch
        that ends at ``current_message_id``, pin or archive it, or replace its ``tags`` (at
        most 10, of 1 to 32 characters)."""
        fields = (
            ("title", title),
            ("system_prompt", system_prompt),
            ("current_message_id", current_message_id),
            ("pinned", pinned),
            ("archived", archived),
            ("tags", None if tags is None else list(tags)),
        )
        body: dict[str, Any] = {k: v for k, v in fields if v is not None}
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
        self,
        session_id: str,
        *,
        limit: int | None = None,
        after: str | None = None,
        view: str | None = None,
    ) -> dict[str, Any]:
        """One page of a session's history, oldest first: the branch shown, or with
        ``view="tree"`` every message of every branch (each names its ``parent_id``)."""
        return await self._client._object(
            "GET",
            f"/api/v1/sessions/{path_id(session_id)}/messages",
            params={"limit": limit, "after": after, "view": view},
        )

    async def share(self, session_id: str, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """A read-only link to a snapshot of the branch shown now (a ``chat.share``: its
        ``url`` opens for signed-in members of the organisation only)."""
        return await self._client._object(
            "POST",
            f"/api/v1/sessions/{path_id(session_id)}/shares",
            idempotency_key=idempotency_key,
        )

    async def shares(
        self, session_id: str, *, limit: int | None = None, after: str | None = None
    ) -> dict[str, Any]:
        """One page of the session's share links, newest first, revoked ones too."""
        return await self._client._object(
            "GET",
            f"/api/v1/sessions/{path_id(session_id)}/shares",
            params={"limit": limit, "after": after},
        )

    async def regenerate(
        self, session_id: str, *, message_id: str | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Answer a message again (by default the branch's last user message); the earlier
        answers stay, as versions. Returns the queued job."""
        return await self._client._object(
            "POST",
            f"/api/v1/sessions/{path_id(session_id)}/regenerate",
            json={"message_id": message_id},
            idempotency_key=idempotency_key,
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
        parent_id: str | None = FOLLOW_CURRENT,
        wait: bool = True,
        timeout: float | None = 600.0,
        poll_interval: float = 0.2,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Post a user message; the answer is generated by a job.

        It follows the session's current message, or ``parent_id`` (an earlier message: a new
        branch, as an edit makes; None: a new first message).

        A retry of the post (the same ``idempotency_key``: one per call by default) is
        answered with the same job, so a lost answer never adds the message twice.

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
        if parent_id != FOLLOW_CURRENT:
            body["parent_id"] = parent_id
        job = await self._client._object(
            "POST",
            f"/api/v1/sessions/{path_id(session_id)}/messages",
            json=body,
            idempotency_key=idempotency_key,
        )
        if not wait:
            return job
        return await self._client.jobs.wait(job["id"], timeout=timeout, poll_interval=poll_interval)


def _session_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: params.get(k) for k in ("max_tokens", "temperature", "top_p", "seed")}


class AsyncShares:
    """Share links (``/api/v1/shares``), made with :meth:`AsyncSessions.share`."""

    def __init__(self, client: AsyncAutoGLMClient) -> None:
        self._client = client

    async def get(self, share_id: str) -> dict[str, Any]:
        """One link; ``revoked_at`` is set once it is revoked."""
        return await self._client._object("GET", f"/api/v1/shares/{path_id(share_id)}")

    async def revoke(self, share_id: str) -> None:
        """Revoke a link: its page is gone (404) from now on, for good."""
        await self._client.request("DELETE", f"/api/v1/shares/{path_id(share_id)}")


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
