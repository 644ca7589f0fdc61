"""The engine's logprobs (token ids and floats) as OpenAI's entries:
``{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}``.

``bytes`` are the token's own UTF-8 bytes: for a byte-level BPE vocabulary (GPT-2's, SmolLM's,
Qwen's, Llama 3's) they come from the vocabulary entry, so a token that holds half a character
has its half; ``token`` is those bytes decoded, with U+FFFD for an incomplete character.
"""

from __future__ import annotations

import weakref
from functools import cache
from typing import Any

from engine.result import TokenLogprob


@cache
def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's bytes-to-unicode table, which byte-level BPE vocabularies use."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    byte_values, extra = list(printable), 0
    chars = [chr(b) for b in printable]
    for b in range(256):
        if b not in printable:
            byte_values.append(b)
            chars.append(chr(256 + extra))
            extra += 1
    return dict(zip(chars, byte_values, strict=True))


class LogprobFormatter:
    """Formats one model's logprobs; each token's text and bytes are worked out once."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._tokens: dict[int, tuple[str, list[int]]] = {}

    def token(self, token_id: int) -> tuple[str, list[int]]:
        known = self._tokens.get(token_id)
        if known is None:
            known = self._tokens[token_id] = self._work_out(token_id)
        return known

    def _work_out(self, token_id: int) -> tuple[str, list[int]]:
        piece = self._tokenizer.convert_ids_to_tokens(token_id)
        decoder = _byte_decoder()
        if isinstance(piece, str) and piece and all(char in decoder for char in piece):
            raw = bytes(decoder[char] for char in piece)
        else:  # not byte-level (SentencePiece, say): the decoded text's bytes
            raw = self._tokenizer.decode([token_id]).encode()
        return raw.decode("utf-8", errors="replace"), list(raw)

    def entry(self, token_id: int, logprob: float) -> dict:
        text, raw = self.token(token_id)
        return {"token": text, "logprob": logprob, "bytes": raw}

    def entries(self, logprobs: list[TokenLogprob]) -> list[dict]:
        return [
            {
                **self.entry(item.token, item.logprob),
                "top_logprobs": [self.entry(token, logprob) for token, logprob in item.top],
            }
            for item in logprobs
        ]


_formatters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def formatter_for(tokenizer: Any) -> LogprobFormatter:
    """The formatter of a resident model's tokenizer (kept as long as the tokenizer is)."""
    formatter = _formatters.get(tokenizer)
    if formatter is None:
        formatter = _formatters[tokenizer] = LogprobFormatter(tokenizer)
    return formatter
