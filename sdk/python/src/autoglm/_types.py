"""Typed shapes of what the SDK returns (plain dicts at runtime)."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

__all__ = ["ChatMessage", "ChatResponse", "JobEvent", "Usage"]


class ChatMessage(TypedDict):
    """One message of a conversation, as OpenAI's API takes it."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]
    name: NotRequired[str]


class Usage(TypedDict):
    """Token counts of one completion."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatResponse(TypedDict):
    """What :meth:`AutoGLMClient.chat` returns: the answer and its metadata.

    ``raw`` is the whole ``chat.completion`` body as the server sent it.
    """

    content: str
    finish_reason: str | None
    usage: Usage | None
    id: str
    model: str
    raw: dict[str, Any]


class JobEvent(TypedDict):
    """One server-sent event of a job: ``token``, ``reset``, ``done`` or ``error``.

    ``data`` is the decoded JSON payload: ``{"text": ...}`` for a token; ``{"status",
    "finish_reason", "usage", "message_id"}`` for done; ``{"status", "error": {...}}`` for error.
    ``id`` is the event id to resume after (``last_event_id=``).
    """

    id: str | None
    event: str
    data: Any
