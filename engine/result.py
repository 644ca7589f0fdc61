"""What a finished generation produced: its text, usage and why it ended."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A generated token's log probability, and the ``top`` most likely tokens' (id, logprob)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class GenerationResult:
    """A finished completion, with the usage numbers the API bills and reports."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    # "stop": end-of-turn token or stop string; "length": hit max_tokens;
    # "cancelled": should_stop() asked to stop early.
    finish_reason: FinishReason
    # Per generated token (end-of-turn left out) when the request asked for logprobs.
    logprobs: tuple[TokenLogprob, ...] | None = None
    # Prompt tokens whose KV came from the prefix cache (OpenAI's cached_tokens).
    cached_tokens: int = 0
