"""Picking each sequence's next token, exactly as ``generate()`` picks it.

Greedy, or sampling with a private RNG per request: the engine builds the processors for each
sampling job at submission (:func:`sampling_processors`) and :class:`Sampler` applies them to the
job's logits row after every forward; bench's ``generate()`` hands the same processors to
``model.generate``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from engine.result import TokenLogprob

if TYPE_CHECKING:
    from engine.sequence import Sequence

logger = logging.getLogger(__name__)

_SEED_MASK = (1 << 64) - 1


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
    temperature: float,
    top_p: float,
    generator: torch.Generator,
    *,
    top_k: int = 0,
    min_p: float = 0.0,
) -> list[Callable[[Any, torch.Tensor], torch.Tensor]]:
    """The logits processors that turn greedy decoding into seeded sampling.

    Applied in this order to a ``(1, vocab)`` float32 score row and followed by
    argmax, they give exactly the token ``generate()`` samples for the same
    logits and generator state (temperature, then top-k, top-p and min-p, as
    ``generate()`` orders them). Empty for greedy decoding (``temperature == 0``).
    """
    if temperature <= 0:
        return []
    from transformers import (
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors: list[Callable[[Any, torch.Tensor], torch.Tensor]] = [
        TemperatureLogitsWarper(float(temperature))
    ]
    if top_k > 0:
        processors.append(TopKLogitsWarper(int(top_k)))
    if top_p < 1:
        processors.append(TopPLogitsWarper(float(top_p)))
    if min_p > 0:
        processors.append(MinPLogitsWarper(float(min_p)))
    processors.append(GumbelMaxSampler(generator))
    return processors


class Sampler:
    """The next token of every sequence of a forward, from its row of float32 logits.

    A sequence's own shaping first (penalties, logit_bias, a grammar's mask: engine/logits.py),
    then its sampling processors (empty: greedy), then argmax, as ``generate()`` picks with
    ``do_sample=False``. A sequence that asked for logprobs gets its pick's, and its top
    alternatives', from the model's raw distribution (as vLLM reports them by default).
    """

    def __init__(self, generation_config: Any, eos_ids: list[int]) -> None:
        self._eos_ids = frozenset(eos_ids)
        self._warn_unsupported(generation_config)

    @staticmethod
    def _warn_unsupported(config: Any) -> None:
        # Logits processors generate() would build from a checkpoint's
        # generation_config with do_sample=False, that the engine does not apply.
        counts = ("no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "min_length")
        ids = (
            "min_new_tokens",
            "bad_words_ids",
            "suppress_tokens",
            "begin_suppress_tokens",
            "sequence_bias",
            "forced_bos_token_id",
            "forced_eos_token_id",
        )
        found = [key for key in counts if getattr(config, key, None)]
        found += [key for key in ids if getattr(config, key, None) is not None]
        if found:
            logger.warning(
                "engine ignores generation_config settings that generate() would apply",
                extra={"settings": found},
            )

    def __call__(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int]:
        """Next token per sequence from its float32 logits row, as generate() would pick it."""
        tokens = logits.argmax(dim=-1).tolist()  # right for every plain greedy sequence
        for index, seq in enumerate(seqs):
            shaper, wants_logprobs = seq.shaper, seq.logprobs is not None
            if not (shaper or seq.processors or wants_logprobs):
                continue
            scores = logits[index : index + 1]
            raw = scores[0].log_softmax(dim=-1) if wants_logprobs else None
            if shaper is not None:
                shaper(scores)
            for processor in seq.processors:
                scores = processor(None, scores)
            token = tokens[index] = int(scores.argmax(dim=-1))
            if raw is not None and token not in self._eos_ids:
                seq.logprobs.append(_token_logprob(raw, token, seq.top_logprobs))
        return tokens


def _token_logprob(raw: torch.Tensor, token: int, top: int) -> TokenLogprob:
    alternatives: tuple[tuple[int, float], ...] = ()
    if top:
        values, ids = raw.topk(top)
        alternatives = tuple(zip(ids.tolist(), values.tolist(), strict=True))
    return TokenLogprob(token=token, logprob=float(raw[token]), top=alternatives)
