"""What can fail: a generation job, by the request's fault (GenerationError) or the engine's, and
loading a model the engine cannot serve (UnsupportedModelError)."""

from __future__ import annotations

from engine.result import GenerationResult


class GenerationError(Exception):
    """Base class for request errors the API should report to the client."""


class InvalidGenerationRequest(GenerationError, ValueError):
    """The messages or sampling parameters are malformed."""


class PromptTooLongError(GenerationError):
    """The prompt plus the requested completion does not fit the context window."""

    def __init__(self, prompt_tokens: int, max_tokens: int, context_window: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.context_window = context_window
        super().__init__(
            f"prompt is {prompt_tokens} tokens and max_tokens is {max_tokens}, but the model's "
            f"context window is {context_window} tokens; shorten the prompt or lower max_tokens"
        )


class EngineDeadError(RuntimeError):
    """The engine cannot run the job: it crashed, or was stopped before the job finished.

    Deliberately not a GenerationError: it is the worker's failure, not the
    request's, so the job should be failed as an internal error (or retried
    on another worker), never reported as a bad request. ``reason`` says what
    happened; after a crash ``__cause__`` is the original exception. ``partial``
    is what the job produced before (text already streamed, tokens to bill), when
    the engine had taken the job.
    """

    def __init__(self, reason: str, partial: GenerationResult | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial


class JobTimeoutError(GenerationError, TimeoutError):
    """The job ran past its own ``timeout`` (time spent queued included) and was aborted.

    ``partial`` is what it produced before that: the text already streamed
    through ``on_text`` (nothing held back is released), the tokens to bill,
    and finish_reason "cancelled".
    """

    def __init__(self, timeout: float, partial: GenerationResult) -> None:
        super().__init__(f"generation did not finish within its {timeout:g}s timeout")
        self.timeout = timeout
        self.partial = partial


class UnsupportedModelError(ValueError):
    """The model uses something the engine cannot compute exactly as generate() does.

    Raised when the model loads (engine/support.py), or by the engine's
    attention if a forward asks it for math it does not do, so such a model is
    refused rather than served with silently different output. ``model`` is
    the model's name and ``feature`` what it uses; the message names both.
    """

    def __init__(self, model: str, feature: str) -> None:
        super().__init__(
            f"model {model!r} cannot be served: it uses {feature}, "
            f"which the batching engine does not reproduce exactly"
        )
        self.model = model
        self.feature = feature
