# The source of its synchronous twin: edit this file, then run scripts/unasync.py.
"""A streamed chat for the asyncio client: :class:`AsyncChatStream`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

import httpx

from .._core import ChatStreamState, SSEDecoder, connection_error
from .._exceptions import AutoGLMError
from .._types import Usage

__all__ = ["AsyncChatStream"]


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
