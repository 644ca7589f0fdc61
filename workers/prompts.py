"""The prompt of a chat job: messages rendered with the model's chat template, fitted to its window.

Django-free: it works on the resident model's tokenizer (``engine.registry.LoadedModel``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from engine.errors import InvalidGenerationRequest, PromptTooLongError
from engine.registry import LoadedModel
from engine.request import validate_max_tokens


def _validate_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    if not messages:
        raise InvalidGenerationRequest("messages must not be empty")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidGenerationRequest(f"messages[{index}] must be an object")
        if not isinstance(message.get("role"), str):
            raise InvalidGenerationRequest(f"messages[{index}].role must be a string")
        calls = message.get("tool_calls")
        if not isinstance(message.get("content"), str) and not (calls and "content" in message):
            raise InvalidGenerationRequest(f"messages[{index}].content must be a string")


def _uses_tools(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping] | None) -> bool:
    return bool(tools) or any(m.get("tool_calls") or m["role"] == "tool" for m in messages)


def encode_prompt(
    loaded: LoadedModel,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    continue_final: bool = False,
) -> list[int]:
    """Validate ``messages`` and render them with the chat template into prompt token ids;
    ``tools`` (OpenAI's function definitions) and the tool calls and results in the messages
    are rendered as the model's template has them, or in the Hermes form
    (workers/tool_prompts.py). With ``continue_final`` the prompt ends inside the last message
    (an answer cut short, to write more of): no end of its turn, no new turn after it."""
    _validate_messages(messages)
    messages, template_tools = list(messages), None
    if _uses_tools(messages, tools):
        from .tool_prompts import prepare

        messages, template_tools = prepare(loaded.tokenizer, messages, list(tools or []) or None)
    encoded = loaded.tokenizer.apply_chat_template(
        messages,
        tools=template_tools,
        add_generation_prompt=not continue_final,
        continue_final_message=continue_final,
        tokenize=True,
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


def fit_messages(
    loaded: LoadedModel,
    messages: Sequence[Mapping[str, Any]],
    *,
    max_tokens: int,
    tools: Sequence[Mapping[str, Any]] | None = None,
    continue_final: bool = False,
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
    validate_max_tokens(max_tokens)
    messages = list(messages)
    _validate_messages(messages)
    budget = loaded.context_window - max_tokens
    droppable = [i for i, m in enumerate(messages[:-1]) if m["role"] != "system"]

    def keep(count: int) -> list[dict]:
        dropped = set(droppable[:count])
        return [dict(m) for i, m in enumerate(messages) if i not in dropped]

    def fits(count: int) -> tuple[bool, int]:
        tokens = len(encode_prompt(loaded, keep(count), tools=tools, continue_final=continue_final))
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


def encode_text(loaded: LoadedModel, text: str) -> list[int]:
    """A legacy completion's prompt as token ids: the text as it is, without the chat template,
    with the special tokens the tokenizer itself adds (a BOS, for some), as vLLM encodes it."""
    return [int(token) for token in loaded.tokenizer.encode(text)]
