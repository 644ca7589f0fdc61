"""A job's engine state: its prompt, where its KV lives, how far it got, how its text goes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from engine.detokenizer import CompletionMonitor
    from engine.request import EngineHandle


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
        "deadline",
        "timeout",
        "row",
        "prefilled",
        "cached",
        "started",
        "done",
    )

    def __init__(
        self,
        handle: EngineHandle,
        prompt_ids: list[int],
        monitor: CompletionMonitor,
        processors: list[Callable[[Any, torch.Tensor], torch.Tensor]],
        timeout: float | None,
    ) -> None:
        self.handle = handle
        self.prompt_ids = prompt_ids
        self.prompt_len = len(prompt_ids)
        self.reserve = self.prompt_len + handle.request.max_tokens
        self.monitor = monitor
        self.processors = processors  # empty: greedy
        self.timeout = timeout
        self.deadline = None if timeout is None else handle.submitted_at + timeout
        self.row = -1
        self.prefilled = 0  # prompt tokens processed
        self.cached = 0  # tokens in this job's KV row
        self.started = False  # should_stop() asked before the first prefill chunk
        self.done = False

    @property
    def decoding(self) -> bool:
        return self.prefilled == self.prompt_len and not self.done
