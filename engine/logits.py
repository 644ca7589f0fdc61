"""A job's own changes to its logits before the pick: penalties, logit_bias, a grammar's mask.

They mean what the OpenAI API and vLLM say they mean, applied in vLLM's order to the job's
float32 row before temperature and the top-k/top-p/min-p filters (engine/sampler.py):

- ``repetition_penalty`` (vLLM, as in ``generate()``): a token already in the prompt or the
  output has its logit divided by the penalty when positive, multiplied when negative;
- ``frequency_penalty`` and ``presence_penalty`` (OpenAI): minus ``frequency * count`` and
  ``presence * (count > 0)``, counting the token in the output so far;
- ``logit_bias`` (OpenAI): added to the logits of its token ids (-100 bans, 100 forces);
- a grammar's mask (structured outputs, forced tool calls): tokens that would leave the
  grammar get -inf, whatever the rest did.

The output counts are kept per token as the job goes (one ``scatter`` per step), so a penalty
costs the same at token 10 and at token 1000.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from engine.grammar import GrammarConstraint


class LogitsShaper:
    """One job's penalties, bias and grammar; ``None`` fields cost nothing. Called on the engine
    thread: ``__call__`` before the pick (sampler), ``accept`` after it (scheduler)."""

    def __init__(
        self,
        *,
        vocab: int,
        device: torch.device,
        prompt_ids: list[int],
        repetition_penalty: float | None,
        frequency_penalty: float,
        presence_penalty: float,
        logit_bias: dict[int, float] | None,
        grammar: GrammarConstraint | None,
    ) -> None:
        self.grammar = grammar
        self._repetition = repetition_penalty if repetition_penalty not in (None, 1.0) else None
        self._frequency = float(frequency_penalty)
        self._presence = float(presence_penalty)
        self._counts: torch.Tensor | None = None
        if self._frequency or self._presence:
            self._counts = torch.zeros(vocab, dtype=torch.float32, device=device)
        self._seen: torch.Tensor | None = None  # prompt and output tokens, for repetition
        if self._repetition is not None:
            self._seen = torch.zeros(vocab, dtype=torch.bool, device=device)
            self._seen[torch.tensor(prompt_ids, device=device)] = True
        self._bias_ids: torch.Tensor | None = None
        self._bias: torch.Tensor | None = None
        if logit_bias:
            self._bias_ids = torch.tensor(list(logit_bias), dtype=torch.long, device=device)
            self._bias = torch.tensor(list(logit_bias.values()), dtype=torch.float32, device=device)

    @property
    def active(self) -> bool:
        return any(
            part is not None for part in (self._repetition, self._counts, self._bias, self.grammar)
        )

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        """Shape a ``(1, vocab)`` row in place (and return it)."""
        row = scores[0]
        if self._seen is not None:
            penalty = self._repetition
            picked = row[self._seen]
            row[self._seen] = torch.where(picked > 0, picked / penalty, picked * penalty)
        if self._counts is not None:
            row -= self._frequency * self._counts + self._presence * (self._counts > 0)
        if self._bias is not None:
            row.index_add_(0, self._bias_ids, self._bias)
        if self.grammar is not None:
            self.grammar.apply(scores)
        return scores

    def accept(self, token: int) -> None:
        """Count the token the job picked (and move its grammar on)."""
        if self._counts is not None:
            self._counts[token] += 1
        if self._seen is not None:
            self._seen[token] = True
        if self.grammar is not None:
            self.grammar.accept(token)
