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


class Sampler:
    """The next token of every sequence of a forward, from its row of float32 logits.

    Applies what ``generate()`` applies with ``do_sample=False``: the checkpoint's repetition
    penalty, then each sequence's own processors (empty: greedy), then argmax.
    """

    def __init__(self, generation_config: Any) -> None:
        # generate() applies the checkpoint's repetition penalty; so does the engine.
        penalty = getattr(generation_config, "repetition_penalty", None)
        self._repetition_penalty = float(penalty) if penalty not in (None, 1, 1.0) else None
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
        if self._repetition_penalty is not None:
            from transformers import RepetitionPenaltyLogitsProcessor

            penalty = RepetitionPenaltyLogitsProcessor(self._repetition_penalty)
            for index, seq in enumerate(seqs):
                history = torch.tensor([seq.prompt_ids + seq.monitor.ids], device=logits.device)
                logits[index : index + 1] = penalty(history, logits[index : index + 1])
        tokens = logits.argmax(dim=-1).tolist()
        for index, seq in enumerate(seqs):
            if seq.processors:
                scores = logits[index : index + 1]
                for processor in seq.processors:
                    scores = processor(None, scores)
                tokens[index] = int(scores.argmax(dim=-1))
        return tokens
