"""What a finished generation produced: its text, usage and why it ended."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class GenerationResult:
    """A finished completion, with the usage numbers the API bills and reports."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    # "stop": end-of-turn token or stop string; "length": hit max_tokens;
    # "cancelled": should_stop() asked to stop early.
    finish_reason: FinishReason
