"""Prompts and request builders shared by the engine tests."""

from __future__ import annotations

from engine.registry import LoadedModel
from engine.request import EngineRequest
from workers.prompts import encode_prompt

MESSAGES = [{"role": "user", "content": "Hello, who are you?"}]
# Greedy decoding of this prompt on the tiny model runs 400+ tokens without an end-of-turn.
LONG_STORY = [{"role": "user", "content": "Tell me a long story."}]
PROMPTS = [
    "Hi",
    "Hello, who are you?",
    "word " * 60,
    "Tell me a long story.",
    "Explain " + "very " * 150 + "briefly.",
]


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def request(loaded: LoadedModel, messages: list[dict], **kwargs) -> EngineRequest:
    kwargs.setdefault("temperature", 0)
    return EngineRequest(prompt_ids=encode_prompt(loaded, messages), **kwargs)
