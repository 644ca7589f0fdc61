"""A chat job's prompt: the chat template, and fitting a conversation into the context window.

Uses the tiny random demo model (its tokenizer and chat template are real).
"""

from __future__ import annotations

import pytest

from bench.baselines import generate
from engine.errors import InvalidGenerationRequest, PromptTooLongError
from engine.registry import LoadedModel
from workers.prompts import encode_prompt, fit_messages

MESSAGES = [{"role": "user", "content": "Hello, who are you?"}]


def _conversation(turns: int, words: int) -> list[dict]:
    messages = [{"role": "system", "content": "You are terse."}]
    for turn in range(turns):
        messages.append({"role": "user", "content": f"question {turn}: " + "word " * words})
        messages.append({"role": "assistant", "content": f"answer {turn}: " + "word " * words})
        if turn == 3:
            messages.append({"role": "system", "content": "Be terser."})
    messages.append({"role": "user", "content": "And now?"})
    return messages


def test_it_keeps_every_message_that_fits(tiny_loaded: LoadedModel) -> None:
    messages = _conversation(turns=3, words=20)

    assert fit_messages(tiny_loaded, messages, max_tokens=100) == (messages, 0)


def test_it_drops_the_oldest_turns_to_fit_the_context_window(tiny_loaded: LoadedModel) -> None:
    messages = _conversation(turns=12, words=100)
    max_tokens = 256
    budget = tiny_loaded.context_window - max_tokens
    assert len(encode_prompt(tiny_loaded, messages)) > budget

    kept, dropped = fit_messages(tiny_loaded, messages, max_tokens=max_tokens)

    systems = [m for m in messages if m["role"] == "system"]
    others = [m for m in messages if m["role"] != "system"]
    assert dropped > 0
    assert [m for m in kept if m["role"] == "system"] == systems  # system messages all stay
    assert [m for m in kept if m["role"] != "system"] == others[dropped:]  # oldest go first
    assert kept[0] == messages[0]
    assert kept[-1] == messages[-1]
    assert len(kept) == len(messages) - dropped
    assert len(encode_prompt(tiny_loaded, kept)) <= budget
    # ...and no more than needed was dropped.
    one_more = [m for m in messages if m["role"] == "system" or m in others[dropped - 1 :]]
    assert len(encode_prompt(tiny_loaded, one_more)) > budget
    generate(tiny_loaded, kept, max_tokens=1)  # accepted as is


def test_it_raises_when_the_last_message_alone_is_too_long(tiny_loaded: LoadedModel) -> None:
    messages = _conversation(turns=2, words=5)
    messages[-1] = {"role": "user", "content": "word " * tiny_loaded.context_window}

    with pytest.raises(PromptTooLongError) as excinfo:
        fit_messages(tiny_loaded, messages, max_tokens=16)

    only_required = [m for m in messages if m["role"] == "system"] + [messages[-1]]
    assert excinfo.value.prompt_tokens == len(encode_prompt(tiny_loaded, only_required))
    assert excinfo.value.context_window == tiny_loaded.context_window
    with pytest.raises(PromptTooLongError):  # max_tokens alone can overflow too
        fit_messages(tiny_loaded, MESSAGES, max_tokens=tiny_loaded.context_window)
    with pytest.raises(InvalidGenerationRequest):
        fit_messages(tiny_loaded, MESSAGES, max_tokens=0)
