"""Single-request chat completion on a resident model.

One request at a time per model (each model has a lock). The continuous-batching
engine (workers/engine.py) serves many requests at once with the same request/
response shapes and the same per-sequence text handling (CompletionMonitor,
seeded Gumbel sampling), which live here so that both paths share them.

Generation can stream: a single stopping-criteria hook, run by
``model.generate`` after every decode step, detokenizes the completion so far,
hands new text to an ``on_text`` callback, watches for stop strings and asks a
``should_stop`` callback whether the client has cancelled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

# Imported before transformers (which is imported lazily below) so that the
# registry's HF_HUB_OFFLINE default is in place when huggingface_hub reads it.
from workers.registry import LoadedModel

_SEED_MASK = (1 << 64) - 1

MAX_STOP_SEQUENCES = 4  # as in the OpenAI API

# What a byte-level BPE decode shows for a UTF-8 sequence whose remaining bytes
# are still to come.
_REPLACEMENT_CHAR = "\ufffd"

FinishReason = Literal["stop", "length", "cancelled"]


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


@dataclass(frozen=True)
class GenerationResult:
    """A finished completion, with the usage numbers the API bills and reports."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    # "stop": end-of-turn token or stop string; "length": hit max_tokens;
    # "cancelled": should_stop() asked to stop early.
    finish_reason: FinishReason


class GumbelMaxSampler:
    """Turns greedy decoding into sampling driven by a private ``torch.Generator``.

    ``model.generate(do_sample=True)`` draws from torch's process-global RNG,
    so with several models generating in parallel threads a seeded request
    would not be reproducible. argmax(logits + Gumbel noise) is an exact sample
    from softmax(logits) (the Gumbel-max trick), so adding noise from our own
    generator and letting generate take the argmax gives per-request RNG
    without reimplementing the decoding loop. (Duck-typed rather than a
    ``LogitsProcessor`` subclass so this module need not import transformers
    at import time.)
    """

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        noise = torch.empty_like(scores).exponential_(generator=self.generator)
        # -log(Exp(1)) is Gumbel(0, 1). Clamp so a zero draw cannot give +inf,
        # which would turn a masked (-inf) token into NaN and win the argmax.
        return scores - noise.clamp_min_(torch.finfo(noise.dtype).tiny).log_()


_GumbelMaxSampler = GumbelMaxSampler  # former private name


def seeded_generator(device: torch.device, seed: int | None) -> torch.Generator:
    """A private RNG for one request: seeded if ``seed`` is given, else from OS entropy.

    Never touches torch's process-global RNG, so concurrent requests (threads,
    or batch-mates in the engine) cannot perturb each other's samples.
    """
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()  # fresh OS entropy, leaving torch's global RNG untouched
    else:
        # OpenAI-style seeds may be any int; torch accepts only 64-bit values.
        generator.manual_seed(seed & _SEED_MASK)
    return generator


def sampling_processors(
    temperature: float, top_p: float, generator: torch.Generator
) -> list[Callable[[Any, torch.Tensor], torch.Tensor]]:
    """The logits processors that turn greedy decoding into seeded sampling.

    Applied in this order to a ``(1, vocab)`` float32 score row and followed by
    argmax, they give exactly the token ``generate()`` samples for the same
    logits and generator state. Empty for greedy decoding (``temperature == 0``).
    """
    if temperature <= 0:
        return []
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    processors: list[Callable[[Any, torch.Tensor], torch.Tensor]] = [
        TemperatureLogitsWarper(float(temperature))
    ]
    if top_p < 1:
        processors.append(TopPLogitsWarper(float(top_p)))
    processors.append(GumbelMaxSampler(generator))
    return processors


def _validate_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    if not messages:
        raise InvalidGenerationRequest("messages must not be empty")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidGenerationRequest(f"messages[{index}] must be an object")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise InvalidGenerationRequest(f"messages[{index}].{key} must be a string")


def encode_prompt(loaded: LoadedModel, messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """Validate ``messages`` and render them with the chat template into prompt token ids."""
    _validate_messages(messages)
    encoded = loaded.tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=True, tokenize=True
    )
    # transformers 4 returned a list of ids here; transformers 5 returns a
    # BatchEncoding (a dict with input_ids and attention_mask).
    if isinstance(encoded, Mapping):
        encoded = encoded["input_ids"]
    if isinstance(encoded, torch.Tensor):
        encoded = encoded.tolist()
    if encoded and isinstance(encoded[0], list):
        encoded = encoded[0]
    return [int(token) for token in encoded]


_encode_prompt = encode_prompt  # former private name


def count_prompt_tokens(loaded: LoadedModel, messages: Sequence[Mapping[str, Any]]) -> int:
    """Number of tokens the chat-formatted prompt occupies.

    Lets the API reject over-long requests (and estimate usage) before queueing
    them for a worker.
    """
    return len(encode_prompt(loaded, messages))


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


def _validate_max_tokens(max_tokens: int) -> None:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidGenerationRequest(f"max_tokens must be a positive integer, got {max_tokens!r}")


def validate_sampling(max_tokens: int, temperature: float, top_p: float) -> None:
    """Raise InvalidGenerationRequest unless the sampling parameters are usable."""
    _validate_max_tokens(max_tokens)
    if not (math.isfinite(temperature) and temperature >= 0):
        raise InvalidGenerationRequest(f"temperature must be >= 0, got {temperature!r}")
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise InvalidGenerationRequest(f"top_p must be in (0, 1], got {top_p!r}")


def validate_stop(stop: str | Sequence[str]) -> tuple[str, ...]:
    """Normalise ``stop`` (a string or up to 4 of them) to a tuple of distinct strings."""
    # OpenAI accepts a bare string as well as a list of them; a str is also a
    # Sequence[str] of its characters, which is never what the caller means.
    if isinstance(stop, str):
        stop = (stop,)
    try:
        stops = tuple(stop)
    except TypeError:
        raise InvalidGenerationRequest("stop must be a string or a list of strings") from None
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidGenerationRequest(
            f"stop may hold at most {MAX_STOP_SEQUENCES} sequences, got {len(stops)}"
        )
    for index, value in enumerate(stops):
        if not isinstance(value, str) or not value:
            raise InvalidGenerationRequest(f"stop[{index}] must be a non-empty string")
    return tuple(dict.fromkeys(stops))


def _common_prefix_length(a: str, b: str) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


class CompletionMonitor:
    """Follows a completion token by token and turns it into text.

    Shared by ``generate()`` (as a ``model.generate`` stopping criterion: after
    every decode step it is called with all ids so far) and by the batching
    engine (which calls :meth:`feed` with each sequence's new token). It
    records the new token(s) and decides whether to stop: end-of-turn token or
    stop string ("stop"), ``should_stop()`` ("cancelled"), ``max_tokens``
    ("length"). When streaming (``on_text``) or matching stop strings it
    decodes the whole completion each step and emits only the new suffix,
    holding back a trailing incomplete UTF-8 character (shown as U+FFFD) and
    any tail that could be the start of a stop string. Whatever was held back
    is released when generation ends, so the deltas always add up to ``text``.

    Duck-typed rather than a ``StoppingCriteria`` subclass for the same reason
    as _GumbelMaxSampler. Once finished it ignores further calls (and keeps
    answering "stop"), in case ``generate`` runs a step past the decision.
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


_CompletionMonitor = CompletionMonitor  # former private name


def make_decoder(loaded: LoadedModel) -> Callable[[list[int]], str]:
    """The detokenizer both generation paths use for a completion's ids."""

    def decode(ids: list[int]) -> str:
        # No clean-up of "spaces before punctuation": it would rewrite text
        # already streamed (and mangles code), so neither path applies it.
        return loaded.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    return decode


def fit_messages(
    loaded: LoadedModel,
    messages: Sequence[Mapping[str, Any]],
    *,
    max_tokens: int,
) -> tuple[list[dict], int]:
    """Drop the oldest turns of a conversation until it fits the context window.

    Removes non-system messages oldest first until the chat-formatted prompt
    plus ``max_tokens`` fits; system messages and the last message are always
    kept. Returns the kept messages (in order) and how many were dropped.
    Raises PromptTooLongError if the prompt does not fit even with everything
    droppable dropped, InvalidGenerationRequest for malformed input.

    Equivalent to dropping one message at a time, but binary-searches the
    number to drop (prompt length only shrinks as messages go), so trimming a
    long session costs O(log n) chat-template renders instead of O(n).
    """
    _validate_max_tokens(max_tokens)
    messages = list(messages)
    _validate_messages(messages)
    budget = loaded.context_window - max_tokens
    droppable = [i for i, m in enumerate(messages[:-1]) if m["role"] != "system"]

    def keep(count: int) -> list[dict]:
        dropped = set(droppable[:count])
        return [dict(m) for i, m in enumerate(messages) if i not in dropped]

    def fits(count: int) -> tuple[bool, int]:
        tokens = len(encode_prompt(loaded, keep(count)))
        return tokens <= budget, tokens

    if fits(0)[0]:
        return keep(0), 0
    ok, tokens = fits(len(droppable))
    if not ok:
        raise PromptTooLongError(tokens, max_tokens, loaded.context_window)
    too_few, enough = 0, len(droppable)  # fits(too_few) is False, fits(enough) is True
    while enough - too_few > 1:
        middle = (too_few + enough) // 2
        if fits(middle)[0]:
            enough = middle
        else:
            too_few = middle
    return keep(enough), enough


def generate(
    loaded: LoadedModel,
    messages: list[dict],
    *,
    max_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: Sequence[str] = (),
    on_text: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> GenerationResult:
    """Produce the assistant's reply to a chat conversation.

    ``temperature == 0`` decodes greedily (deterministic); otherwise tokens are
    sampled with temperature and nucleus (top-p) filtering. A ``seed`` makes
    sampling reproducible for the same model, device and dtype, regardless of
    what other threads are doing. Blocks while another thread is generating
    with the same model.

    ``stop`` (a string or up to 4 of them) ends generation as soon as the
    completion contains one; the text is cut before its earliest occurrence.
    ``on_text`` is called with each new piece of text as it is generated (at
    most once per decode step, never with ""); the pieces concatenate to the
    returned ``text`` exactly. ``should_stop`` is asked once before the prompt
    is processed and once per decode step; when it returns True generation
    ends with finish_reason "cancelled" and the text so far. Both callbacks
    run on this thread while the model's lock is held, so they should be
    quick; an exception from either aborts generation and propagates.

    Raises PromptTooLongError if the prompt leaves no room for ``max_tokens``
    new tokens, InvalidGenerationRequest for malformed input.
    """
    validate_sampling(max_tokens, temperature, top_p)
    stops = validate_stop(stop)
    prompt_ids = encode_prompt(loaded, messages)
    prompt_tokens = len(prompt_ids)
    if prompt_tokens > loaded.context_window - max_tokens:
        raise PromptTooLongError(prompt_tokens, max_tokens, loaded.context_window)

    eos_ids = eos_token_ids(loaded)
    pad_id = loaded.tokenizer.pad_token_id
    if pad_id is None:
        pad_id = eos_ids[0] if eos_ids else 0

    from transformers import LogitsProcessorList, StoppingCriteriaList

    processors = LogitsProcessorList()
    if temperature > 0:
        generator = seeded_generator(loaded.device, seed)
        processors.extend(sampling_processors(temperature, top_p, generator))

    monitor = CompletionMonitor(
        decode=make_decoder(loaded),
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        eos_ids=eos_ids,
        stop=stops,
        on_text=on_text,
        should_stop=should_stop,
    )
    input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=loaded.device)
    with loaded.lock, torch.inference_mode():
        # A request cancelled while it waited for the lock skips the prefill.
        if not monitor.cancelled_before_start():
            loaded.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_tokens,
                # Always "greedy" from HF's point of view: when sampling, the
                # randomness comes from GumbelMaxSampler. Passing do_sample
                # explicitly also overrides a checkpoint's own sampling defaults
                # (temperature/top_k in generation_config.json), which the API's
                # parameters replace.
                do_sample=False,
                num_beams=1,
                eos_token_id=eos_ids or None,
                pad_token_id=pad_id,
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([monitor]),
            )
            monitor.finish()

    return monitor.result()
