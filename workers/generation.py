"""Single-request chat completion on a resident model.

One request at a time per model for now (each model has a lock); continuous
batching will replace this, but the request/response shapes here are what the
API layer depends on and should stay stable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# Imported before transformers (which is imported lazily below) so that the
# registry's HF_HUB_OFFLINE default is in place when huggingface_hub reads it.
from workers.registry import LoadedModel

_SEED_MASK = (1 << 64) - 1


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
    finish_reason: str  # "stop" (end-of-turn token produced) or "length" (hit max_tokens)


class _GumbelMaxSampler:
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


def _validate_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    if not messages:
        raise InvalidGenerationRequest("messages must not be empty")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidGenerationRequest(f"messages[{index}] must be an object")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise InvalidGenerationRequest(f"messages[{index}].{key} must be a string")


def _encode_prompt(loaded: LoadedModel, messages: Sequence[Mapping[str, Any]]) -> list[int]:
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


def count_prompt_tokens(loaded: LoadedModel, messages: Sequence[Mapping[str, Any]]) -> int:
    """Number of tokens the chat-formatted prompt occupies.

    Lets the API reject over-long requests (and estimate usage) before queueing
    them for a worker.
    """
    return len(_encode_prompt(loaded, messages))


def _eos_token_ids(loaded: LoadedModel) -> list[int]:
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


def _validate_sampling(max_tokens: int, temperature: float, top_p: float) -> None:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidGenerationRequest(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise InvalidGenerationRequest(f"temperature must be >= 0, got {temperature!r}")
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise InvalidGenerationRequest(f"top_p must be in (0, 1], got {top_p!r}")


def generate(
    loaded: LoadedModel,
    messages: list[dict],
    *,
    max_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> GenerationResult:
    """Produce the assistant's reply to a chat conversation.

    ``temperature == 0`` decodes greedily (deterministic); otherwise tokens are
    sampled with temperature and nucleus (top-p) filtering. A ``seed`` makes
    sampling reproducible for the same model, device and dtype, regardless of
    what other threads are doing. Blocks while another thread is generating
    with the same model.

    Raises PromptTooLongError if the prompt leaves no room for ``max_tokens``
    new tokens, InvalidGenerationRequest for malformed input.
    """
    _validate_sampling(max_tokens, temperature, top_p)
    prompt_ids = _encode_prompt(loaded, messages)
    prompt_tokens = len(prompt_ids)
    if prompt_tokens > loaded.context_window - max_tokens:
        raise PromptTooLongError(prompt_tokens, max_tokens, loaded.context_window)

    eos_ids = _eos_token_ids(loaded)
    pad_id = loaded.tokenizer.pad_token_id
    if pad_id is None:
        pad_id = eos_ids[0] if eos_ids else 0

    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    processors = LogitsProcessorList()
    if temperature > 0:
        generator = torch.Generator(device=loaded.device)
        if seed is None:
            generator.seed()  # fresh OS entropy, leaving torch's global RNG untouched
        else:
            # OpenAI-style seeds may be any int; torch accepts only 64-bit values.
            generator.manual_seed(seed & _SEED_MASK)
        processors.append(TemperatureLogitsWarper(float(temperature)))
        if top_p < 1:
            processors.append(TopPLogitsWarper(float(top_p)))
        processors.append(_GumbelMaxSampler(generator))

    input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=loaded.device)
    with loaded.lock, torch.inference_mode():
        output = loaded.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_tokens,
            # Always "greedy" from HF's point of view: when sampling, the
            # randomness comes from _GumbelMaxSampler. Passing do_sample
            # explicitly also overrides a checkpoint's own sampling defaults
            # (temperature/top_k in generation_config.json), which the API's
            # parameters replace.
            do_sample=False,
            num_beams=1,
            eos_token_id=eos_ids or None,
            pad_token_id=pad_id,
            logits_processor=processors,
        )

    new_ids = output[0, prompt_tokens:].tolist()
    finish_reason = "length"
    eos_set = set(eos_ids)
    for index, token in enumerate(new_ids):
        if token in eos_set:
            # Count the end-of-turn token (it was generated, like vLLM does) but
            # drop anything after it.
            new_ids = new_ids[: index + 1]
            finish_reason = "stop"
            break
    text = loaded.tokenizer.decode(new_ids, skip_special_tokens=True)
    return GenerationResult(
        text=text,
        prompt_tokens=prompt_tokens,
        completion_tokens=len(new_ids),
        finish_reason=finish_reason,
    )
