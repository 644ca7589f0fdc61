"""Closing a stream cancels its job, every time (issue 14, defect 6).

Many OpenAI streams are opened at once on the running stack (uvicorn, the worker, the demo
model writing long answers); each client reads the first piece of text and hangs up. Every job
must end ``cancelled`` soon after, billed for the tokens it produced, with its slot back.
"""

import asyncio
import json
import time

import httpx
import pytest

from chat.models import ChatJob
from tenants import quotas
from tenants.models import UsageRecord

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

LONG = 1500  # the demo model writes on for the whole max_tokens: only a cancel stops it early
STREAMS = 20  # the count: 1 to 6 of them ran on to the end
ESSAY = [{"role": "user", "content": "Write an essay about the sea."}]


async def _first_text_then_close(client: httpx.AsyncClient) -> str:
    """Open a stream, read until the first content chunk, hang up; the job's id."""
    body = {"model": "autoglm-demo", "stream": True, "max_tokens": LONG, "temperature": 0}
    body["messages"] = ESSAY
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"][0]["delta"].get("content"):
                return chunk["id"].removeprefix("chatcmpl-")
    raise AssertionError("the stream ended before any text")


async def _open_and_close_streams(base_url: str, key: str, count: int) -> list[str]:
    # One connection per stream, as separate clients have: closing a response that is not read
    # to the end closes its connection.
    limits = httpx.Limits(max_connections=count)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=60, limits=limits
    ) as client:
        return await asyncio.gather(*(_first_text_then_close(client) for _ in range(count)))


def _slots_held(tenant) -> int:
    from autoglm_site.redisconn import redis_client

    key = quotas.scopes_for(tenant, None)[0].keys(quotas._month()).leases
    return redis_client().zcard(key)


def _wait_until_finished(job_ids: list[str], timeout: float) -> list[ChatJob]:
    deadline = time.monotonic() + timeout
    while True:
        rows = list(ChatJob.objects.filter(pk__in=job_ids))
        if all(row.is_finished for row in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_it_cancels_every_stream_closed_after_its_first_chunk(
    celery_worker, live_server_url, tenant_a, key_a
):
    tenant_a.max_concurrent_jobs = STREAMS
    tenant_a.save()
    job_ids = asyncio.run(_open_and_close_streams(live_server_url, key_a, STREAMS))
    closed_at = time.monotonic()
    rows = _wait_until_finished(job_ids, timeout=20)
    waited = time.monotonic() - closed_at
    ran_on = [(str(row.id), row.status, row.completion_tokens) for row in rows]
    ran_on = [row for row in ran_on if row[1] != "cancelled"]
    assert len(rows) == STREAMS
    assert not ran_on, (ran_on, waited)
    assert all(0 < row.completion_tokens < LONG for row in rows)
    # Billed for what each produced: one usage row per job, with its own token count.
    usage = dict(
        UsageRecord.objects.filter(job_id__in=job_ids).values_list("job_id", "completion_tokens")
    )
    assert {str(job_id): tokens for job_id, tokens in usage.items()} == {
        str(row.id): row.completion_tokens for row in rows
    }
    # Each slot comes back (settled just after the final write commits).
    deadline = time.monotonic() + 5
    while _slots_held(tenant_a) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _slots_held(tenant_a) == 0
