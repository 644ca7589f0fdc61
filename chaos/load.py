"""What a chaos run sends: native jobs (retried while the stack refuses them), OpenAI streams
cut after their first chunk, and short OpenAI completions."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable

import httpx

ESSAY = "Write an essay about the sea."
RETRYABLE = {429, 502, 503, 504}


async def submit_job(
    client: httpx.AsyncClient,
    *,
    max_tokens: int,
    job_of_session: Callable[[str], Awaitable[str]],
    give_up_s: float = 120,
):
    """Create a session and post a message to it; the job's id, or None if the stack refused
    it until ``give_up_s`` (every refusal is a clean 503/429 or a refused connection).
    ``job_of_session`` finds the job of a session whose message was stored by a try whose
    answer was lost."""
    deadline = time.monotonic() + give_up_s
    session_id = None
    while time.monotonic() < deadline:
        try:
            if session_id is None:
                response = await client.post("/api/v1/sessions", json={})
                if response.status_code == 201:
                    session_id = response.json()["id"]
                    continue
            else:
                response = await client.post(
                    f"/api/v1/sessions/{session_id}/messages",
                    json={"content": ESSAY, "max_tokens": max_tokens, "temperature": 0.8},
                )
                if response.status_code == 202:
                    return response.json()["id"]
                if response.status_code == 409:
                    # An earlier try was stored, its answer lost with the connection: the
                    # session refuses a second message while that job runs, and it is the one.
                    return await job_of_session(session_id)
            if response.status_code not in RETRYABLE:
                raise RuntimeError(f"unexpected {response.status_code}: {response.text[:300]}")
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadTimeout):
            pass
        await asyncio.sleep(0.5 + random.random())
    return None


async def cut_stream(client: httpx.AsyncClient, *, max_tokens: int) -> str | None:
    """Open an OpenAI stream, read up to its first text, close it; the job's id."""
    body = {
        "model": "autoglm-demo",
        "messages": [{"role": "user", "content": ESSAY}],
        "max_tokens": max_tokens,
        "temperature": 0,  # the demo model then never stops on its own before the cut
        "stream": True,
    }
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"stream refused: {response.status_code}")
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                return chunk["id"].removeprefix("chatcmpl-")
    return None


async def short_completion(client: httpx.AsyncClient) -> int:
    body = {
        "model": "autoglm-demo",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
    }
    response = await client.post("/v1/chat/completions", json=body)
    return response.status_code


def api_client(base_url: str, key: str, **kwargs) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    return httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=60, limits=limits, **kwargs
    )
