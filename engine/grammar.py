"""Grammar-constrained decoding: a sequence's logits masked to what its grammar allows next.

The grammar strings come from the web side (chat/grammars.py builds and validates them from
``response_format`` and ``tool_choice``); here llguidance compiles one against the model's
tokenizer and, at every decode step, says which token ids may follow. One
:class:`GrammarConstraint` per sequence: the sampler calls :meth:`GrammarConstraint.apply` on
the sequence's logits row before picking, then :meth:`GrammarConstraint.accept` with the token
it picked.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

import llguidance
import llguidance.hf
import numpy as np
import torch

from engine.detokenizer import eos_token_ids
from engine.errors import InvalidGenerationRequest
from engine.registry import vocab_size

if TYPE_CHECKING:
    from engine.registry import LoadedModel

# Building the tokenizer's token trie takes about a second (49k tokens), so once per model.
_tokenizers: weakref.WeakKeyDictionary[LoadedModel, llguidance.LLTokenizer] = (
    weakref.WeakKeyDictionary()
)
_tokenizers_lock = threading.Lock()
# Score dtypes numpy can write in place (not bfloat16).
_NUMPY_FLOATS = (torch.float32, torch.float64, torch.float16)


def grammar_tokenizer(loaded: LoadedModel) -> llguidance.LLTokenizer:
    """llguidance's view of ``loaded``'s tokenizer, built on first use and kept with the model.

    Its vocabulary is the model's logits width: ids the embedding has beyond the tokenizer's
    (padding to a multiple of 64, say) have no text, so no grammar ever allows them. End of
    text is every id that ends the assistant's turn, so a finished grammar lets the model stop
    however it is used to.
    """
    tokenizer = _tokenizers.get(loaded)
    if tokenizer is not None:
        return tokenizer
    with _tokenizers_lock:
        tokenizer = _tokenizers.get(loaded)
        if tokenizer is None:
            tokenizer = llguidance.hf.from_tokenizer(
                loaded.tokenizer,
                n_vocab=vocab_size(loaded.model),
                eos_token=eos_token_ids(loaded),
            )
            _tokenizers[loaded] = tokenizer
    return tokenizer


def grammar_constraint(loaded: LoadedModel, grammar: str) -> GrammarConstraint:
    """A fresh constraint for one sequence of ``loaded`` following ``grammar``.

    ``grammar`` is an llguidance grammar (what chat/grammars.py builds, or Lark text). Raises
    InvalidGenerationRequest with llguidance's message when it does not compile, for instance
    when it names a special token this model's tokenizer lacks.
    """
    tokenizer = grammar_tokenizer(loaded)
    # log_level 0: errors come back through get_error(), not printed on stderr.
    matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
    if matcher.is_error():
        raise InvalidGenerationRequest(f"grammar does not compile: {matcher.get_error()}")
    return GrammarConstraint(matcher, tokenizer.vocab_size)


class GrammarConstraint:
    """Where one sequence stands in its grammar: masks its logits, follows its tokens.

    Not thread-safe; the engine thread owns it, like the sequence it belongs to.
    """

    def __init__(self, matcher: llguidance.LLMatcher, n_vocab: int) -> None:
        self._matcher = matcher
        self._n_vocab = n_vocab
        words = (n_vocab + 31) // 32
        # llguidance writes one bit per token id (bit k of word w is id 32*w + k) straight into
        # this buffer; the byte view unpacked little-endian is that order on a little-endian CPU.
        self._bitmask = torch.zeros(words, dtype=torch.int32)
        self._bytes = self._bitmask.numpy().view(np.uint8)
        self._inverted = np.empty_like(self._bytes)
        self._device_bitmask: torch.Tensor | None = None
        self._device_shifts: torch.Tensor | None = None

    @property
    def finished(self) -> bool:
        """The grammar is complete: nothing but an end-of-turn token may follow."""
        return self._matcher.is_stopped()

    def apply(self, scores: torch.Tensor) -> None:
        """Set the scores of every token the grammar does not allow next to -inf, in place.

        ``scores`` is one sequence's ``(1, V)`` row (or ``(V,)``); columns past the
        tokenizer's vocabulary are always disallowed.
        """
        self._matcher.unsafe_compute_mask_ptr(self._bitmask.data_ptr(), self._bytes.nbytes)
        row = scores[0] if scores.dim() == 2 else scores  # a view, whatever its strides
        if row.shape[0] > self._n_vocab:
            row[self._n_vocab :] = float("-inf")
            row = row[: self._n_vocab]
        if row.device.type == "cpu" and row.dtype in _NUMPY_FLOATS and row.is_contiguous():
            # numpy's unpackbits and a masked copy beat every torch formulation without
            # torch.compile, 3-8x (bench/grammar_libs.py); inverting first makes the
            # unpacked bits the disallowed ids.
            np.invert(self._bytes, out=self._inverted)
            disallowed = np.unpackbits(self._inverted, count=row.shape[0], bitorder="little")
            np.copyto(row.numpy(), -np.inf, where=disallowed.view(np.bool_))
        else:
            self._apply_on_device(row)

    def _apply_on_device(self, row: torch.Tensor) -> None:
        # On an accelerator send the 6 KB of bits, not 49 KB of bools, and unpack them there.
        if self._device_bitmask is None or self._device_bitmask.device != row.device:
            self._device_bitmask = torch.empty_like(self._bitmask, device=row.device)
            self._device_shifts = torch.arange(32, dtype=torch.int32, device=row.device)
        assert self._device_shifts is not None
        self._device_bitmask.copy_(self._bitmask)
        bits = (self._device_bitmask.unsqueeze(1) >> self._device_shifts) & 1
        row.masked_fill_(bits.view(-1)[: row.shape[0]] == 0, float("-inf"))

    def accept(self, token: int) -> None:
        """Move past ``token``, the one sampled from the masked scores.

        Raises InvalidGenerationRequest if the grammar cannot take it (it was not among the
        allowed, or the grammar ran into one of llguidance's limits); the constraint is then
        dead and the sequence should end.
        """
        if not self._matcher.consume_token(int(token)):
            raise InvalidGenerationRequest(
                f"the output left its grammar: {self._matcher.get_error()}"
            )
