"""A job's engine state: its prompt, where its KV lives, how far it got, how its text goes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from engine.detokenizer import CompletionMonitor
    from engine.logits import LogitsShaper
    from engine.request import EngineHandle
    from engine.result import TokenLogprob


class Sequence:
    """Engine-side state of one job (touched only by the engine thread once submitted).

    ``cached`` counts the tokens in the job's KV row: the prompt tokens
    processed so far (``prefilled``), then one more per decode step. So the
    tokens a step computes for a job are a prompt chunk while it prefills and
    one token (its last generated one) once it decodes.
    """

    __slots__ = (
        "handle",
        "prompt_ids",
        "prompt_len",
        "reserve",
        "monitor",
        "processors",
        "shaper",
        "logprobs",
        "top_logprobs",
        "logprobs_reported",
        "deadline",
        "timeout",
        "row",
        "prefilled",
        "cached",
        "started",
        "done",
        "parent",
        "siblings",
        "salt",
        "reused",
    )

    def __init__(
        self,
        handle: EngineHandle,
        prompt_ids: list[int],
        monitor: CompletionMonitor,
        processors: list[Callable[[Any, torch.Tensor], torch.Tensor]],
        timeout: float | None,
        shaper: LogitsShaper | None = None,
    ) -> None:
        self.handle = handle
        self.prompt_ids = prompt_ids
        self.prompt_len = len(prompt_ids)
        self.reserve = self.prompt_len + handle.request.max_tokens
        self.monitor = monitor
        self.processors = processors  # empty: greedy
        self.shaper = shaper if shaper is not None and shaper.active else None
        # The picked tokens' logprobs (end-of-turn left out), when the request asked for them.
        top = handle.request.logprobs
        self.logprobs: list[TokenLogprob] | None = None if top is None else []
        self.top_logprobs = top or 0
        self.logprobs_reported = 0  # how many went to the request's on_logprobs
        self.timeout = timeout
        self.deadline = None if timeout is None else handle.submitted_at + timeout
        self.row = -1
        self.prefilled = 0  # prompt tokens processed
        self.cached = 0  # tokens in this job's KV row
        self.started = False  # should_stop() asked before the first prefill chunk
        self.done = False
        # Choices of one prompt (n > 1): the siblings wait for the first one's prefill, then
        # copy its KV and sample their first tokens from its logits (engine/scheduler.py).
        self.parent: Sequence | None = None
        self.siblings: list[Sequence] = []
        # Prefix caching (engine/prefix_cache.py): whose blocks this job may reuse, and how many
        # of its prompt tokens it did.
        self.salt = handle.request.cache_salt
        self.reused = 0

    def computed_tokens(self) -> list[int]:
        """The tokens whose KV is in this job's row: the prompt's, then the generated ones fed
        back (the last one sampled has none yet)."""
        if self.cached <= self.prompt_len:
            return self.prompt_ids[: self.cached]
        return [*self.prompt_ids, *self.monitor.ids[: self.cached - self.prompt_len]]

    def report_logprobs(self) -> None:
        """Hand the logprobs picked since the last call to the request's ``on_logprobs``."""
        callback = self.handle.request.on_logprobs
        if self.logprobs is None or callback is None:
            return
        new = self.logprobs[self.logprobs_reported :]
        self.logprobs_reported = len(self.logprobs)
        if new:
            callback(new)

    @property
    def decoding(self) -> bool:
        return self.prefilled == self.prompt_len and not self.done
