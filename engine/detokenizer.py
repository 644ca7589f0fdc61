"""A completion's ids turned into text as they come: streaming deltas, stop strings, finishing.

Used by the engine for every sequence, and by bench's ``generate()`` through the same
:class:`CompletionMonitor`, so both paths produce the same text and the same deltas.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from engine.result import FinishReason, GenerationResult

if TYPE_CHECKING:
    from engine.registry import LoadedModel
    from engine.request import EngineRequest

# What a byte-level BPE decode shows for a UTF-8 sequence whose remaining bytes
# are still to come.
_REPLACEMENT_CHAR = "\ufffd"


def eos_token_ids(loaded: LoadedModel) -> list[int]:
    """Every token id that ends the assistant's turn, in order, without duplicates."""
    # Chat models often end a turn with a token other than the tokenizer's eos
    # (e.g. both <|im_end|> and <|endoftext|>); generation_config lists them all.
    ids: list[int] = []
    configured = loaded.model.generation_config.eos_token_id
    if isinstance(configured, int):
        ids.append(configured)
    elif configured is not None:
        ids.extend(int(token) for token in configured)
    if loaded.tokenizer.eos_token_id is not None:
        ids.append(int(loaded.tokenizer.eos_token_id))
    return list(dict.fromkeys(ids))


def _common_prefix_length(a: str, b: str) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


class CompletionMonitor:
    """Follows a completion token by token and turns it into text.

    Shared by ``generate()`` (bench/baselines.py; as a ``model.generate``
    stopping criterion: after every decode step it is called with all ids so
    far) and by the batching engine (which calls :meth:`feed` with each sequence's new token). It
    records the new token(s) and decides whether to stop: end-of-turn token or
    stop string ("stop"), ``should_stop()`` ("cancelled"), ``max_tokens``
    ("length"). When streaming (``on_text``) or matching stop strings it
    decodes the whole completion each step and emits only the new suffix,
    holding back a trailing incomplete UTF-8 character (shown as U+FFFD) and
    any tail that could be the start of a stop string. Whatever was held back
    is released when generation ends, so the deltas always add up to ``text``.

    Duck-typed rather than a ``StoppingCriteria`` subclass for the same reason
    as GumbelMaxSampler (engine/sampler.py). Once finished it ignores further
    calls (and keeps answering "stop"), in case ``generate`` runs a step past
    the decision.
    """

    def __init__(
        self,
        *,
        decode: Callable[[list[int]], str],
        prompt_tokens: int,
        max_tokens: int,
        eos_ids: Sequence[int],
        stop: tuple[str, ...],
        on_text: Callable[[str], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self._decode = decode
        self._prompt_tokens = prompt_tokens
        self._max_tokens = max_tokens
        self._eos_ids = frozenset(eos_ids)
        self._stop = stop
        self._on_text = on_text
        self._should_stop = should_stop
        # Decoding every step costs O(length) per step; skip it unless needed.
        self._incremental = bool(stop) or on_text is not None
        self.ids: list[int] = []
        self.emitted = ""
        self.finish_reason: FinishReason | None = None
        self.text = ""

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        if self.finish_reason is None:
            start = self._prompt_tokens + len(self.ids)
            self._step(input_ids[0, start:].tolist())
        return torch.full(
            (input_ids.shape[0],),
            self.finish_reason is not None,
            dtype=torch.bool,
            device=input_ids.device,
        )

    def feed(self, new_ids: list[int]) -> None:
        """Record newly generated token(s) of this sequence; a no-op once finished.

        Calls ``on_text`` and ``should_stop`` (exceptions from them propagate)
        and sets ``finish_reason`` when the completion should end.
        """
        if self.finish_reason is None:
            self._step(new_ids)

    def cancel(self) -> None:
        """End the completion now as "cancelled", releasing any held-back text."""
        if self.finish_reason is None:
            self._finish("cancelled", None)

    def result(self) -> GenerationResult:
        """The finished completion; only valid once ``finish_reason`` is set."""
        assert self.finish_reason is not None
        return GenerationResult(
            text=self.text,
            prompt_tokens=self._prompt_tokens,
            completion_tokens=len(self.ids),
            finish_reason=self.finish_reason,
        )

    def cancelled_before_start(self) -> bool:
        """Asks should_stop() once before the (possibly long) prefill."""
        if self._should_stop is not None and self._should_stop():
            self._finish("cancelled", "")
        return self.finish_reason is not None

    def finish(self) -> None:
        """Called after ``generate`` returns; it only ends unannounced at max length."""
        if self.finish_reason is None:
            self._finish("length", None)

    def _step(self, new_ids: list[int]) -> None:
        eos_hit = False
        for index, token in enumerate(new_ids):
            if token in self._eos_ids:
                # Count the end-of-turn token (it was generated, like vLLM
                # does) but drop anything after it.
                new_ids = new_ids[: index + 1]
                eos_hit = True
                break
        self.ids.extend(new_ids)
        text = self._decode(self.ids) if self._incremental else None
        if text is not None and self._stop:
            cut = self._find_stop(text)
            if cut is not None:
                self._finish("stop", text[:cut])
                return
        if eos_hit:
            self._finish("stop", text)
        elif self._should_stop is not None and self._should_stop():
            self._finish("cancelled", text)
        elif len(self.ids) >= self._max_tokens:
            self._finish("length", text)
        elif text is not None and self._on_text is not None:
            self._emit_partial(text)

    def _find_stop(self, text: str) -> int | None:
        # Emitted text never holds the start of a stop string, so only look
        # past it: a match there could not be retracted anyway.
        start = len(self.emitted) if text.startswith(self.emitted) else 0
        found = [pos for s in self._stop if (pos := text.find(s, start)) >= 0]
        return min(found) if found else None

    def _stop_prefix_length(self, text: str) -> int:
        """Length of the longest tail of ``text`` that a stop string starts with."""
        longest = 0
        for s in self._stop:
            for length in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:length]):
                    longest = length
                    break
        return longest

    def _emit_partial(self, text: str) -> None:
        ready = text.rstrip(_REPLACEMENT_CHAR)
        ready = ready[: len(ready) - self._stop_prefix_length(ready)]
        # A decode that rewrote already-emitted text (which byte-level BPE
        # never does once incomplete characters are held back) waits here.
        if len(ready) > len(self.emitted) and ready.startswith(self.emitted):
            delta = ready[len(self.emitted) :]
            self.emitted = ready
            assert self._on_text is not None
            self._on_text(delta)

    def _finish(self, reason: FinishReason, text: str | None) -> None:
        self.finish_reason = reason
        if text is None:
            text = self._decode(self.ids)
        if not text.startswith(self.emitted):
            # Deltas cannot be taken back: keep what was sent and append the
            # part of the final decode that differs from it.
            text = self.emitted + text[_common_prefix_length(text, self.emitted) :]
        delta = text[len(self.emitted) :]
        self.text = self.emitted = text
        if delta and self._on_text is not None:
            self._on_text(delta)


def request_monitor(
    request: EngineRequest,
    *,
    prompt_tokens: int,
    stop: tuple[str, ...],
    decode: Callable[[list[int]], str],
    eos_ids: Sequence[int],
) -> CompletionMonitor:
    """The monitor of one engine request, with its stops as ``validate_request`` returned them."""
    return CompletionMonitor(
        decode=decode,
        prompt_tokens=prompt_tokens,
        max_tokens=request.max_tokens,
        eos_ids=eos_ids,
        stop=stop,
        on_text=request.on_text,
        should_stop=request.should_stop,
    )


def make_decoder(loaded: LoadedModel) -> Callable[[list[int]], str]:
    """The detokenizer both generation paths use for a completion's ids."""

    def decode(ids: list[int]) -> str:
        # No clean-up of "spaces before punctuation": it would rewrite text
        # already streamed (and mangles code), so neither path applies it.
        return loaded.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    return decode
