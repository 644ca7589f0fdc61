"""The multi-turn workload: conversations that re-send their whole history every turn.

16 conversations x 6 turns, all conversations at once (each one turn after the other, as a
person would chat), greedy, at most 64 new tokens a reply. Each turn's request holds every
earlier user message and reply, so a server that keeps the KV of finished requests (our prefix
cache, llama-server's slot prompt cache) prefills only the new tail. The user messages are the
shorter prompts of the single-turn workload; the first message of each conversation carries the
round and the conversation's number, so no round finds a cache warmed by an earlier one.

Reported per contender: completion tokens/s over the whole run, and p50 time to first token of
the first turns and of the later turns (those are what a prefix cache cuts).
"""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
from stack_bench import one_chat

CONVERSATIONS = 16
TURNS = 6


def user_messages(workload: list[list[dict]], turns: int) -> list[str]:
    """The user messages of a conversation's turns: the workload's shortest prompts."""
    texts = [chat[-1]["content"] for chat in workload]
    return sorted(texts, key=len)[:turns]


async def _conversation(client, model: str, opening: str, messages: list[str]) -> list[dict]:
    history: list[dict] = []
    turns = []
    for number, text in enumerate(messages):
        content = f"{opening} {text}" if number == 0 else text
        history.append({"role": "user", "content": content})
        turn = await one_chat(client, model, history, 0.0, keep_text=True)
        history.append({"role": "assistant", "content": turn.pop("text")})
        turns.append({**turn, "turn": number + 1})
    return turns


async def run_conversations(
    base_url: str,
    key: str,
    model: str,
    workload: list[list[dict]],
    tag: str,
    conversations: int = CONVERSATIONS,
    turns: int = TURNS,
) -> dict:
    """Every conversation at once; tokens/s and p50 TTFT of first and later turns."""
    messages = user_messages(workload, turns)
    limits = httpx.Limits(max_connections=conversations + 4)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=600, limits=limits
    ) as client:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(
                _conversation(client, model, f"(Conversation {tag}-{index}.)", messages)
                for index in range(conversations)
            )
        )
        elapsed = time.perf_counter() - started
    every = [turn for conversation in results for turn in conversation]
    tokens = sum(turn["tokens"] for turn in every)
    return {
        "tokens": tokens,
        "tokens_per_s": tokens / elapsed,
        "p50_ttft_first": statistics.median(t["ttft"] for t in every if t["turn"] == 1),
        "p50_ttft_later": statistics.median(t["ttft"] for t in every if t["turn"] > 1),
        "p50_latency": statistics.median(t["latency"] for t in every),
    }
