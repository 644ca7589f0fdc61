"""Quotas and rate limits on real Redis, shared by web replicas; leases; the usage ledger."""

import os
import signal
import time

import httpx
import pytest

from chat.jobs import job_fail, reserved_in_flight
from chat.models import ChatJob
from tenants import quotas
from tenants.models import UsageRecord
from tenants.services import api_key_create

from .conftest import WorkerProcess, api_client, wait_for_job
from .loadgen import post_in_parallel

LONG = 1500


def set_limits(target, **limits):
    for name, value in limits.items():
        setattr(target, name, value)
    target.save()


def admit(tenant, job_id: str, tokens: int) -> quotas.Headers:
    return quotas.admit(
        tenant=tenant,
        api_key=None,
        job_id=job_id,
        reserve_tokens=tokens,
        reserved_in_flight=reserved_in_flight,
    )


def new_session(client, **fields) -> str:
    return client.post("/api/v1/sessions", fields, format="json").json()["id"]


def message_urls(base: str, client, count: int, **fields) -> list[str]:
    """The messages URLs of ``count`` new sessions: a session takes one message at a time (409
    while its answer is generated), so a burst posts each request to a session of its own."""
    return [
        f"{base}/api/v1/sessions/{new_session(client, **fields)}/messages" for _ in range(count)
    ]


# Admission alone (no worker): the Lua script against real Redis.


@pytest.mark.django_db
def test_it_admits_exactly_the_requests_per_minute(tenant_a, client_a):
    set_limits(tenant_a, requests_per_minute=3)
    codes = [
        client_a.post(url, {"content": "hi"}, format="json")
        for url in message_urls("", client_a, 5)
    ]
    assert [r.status_code for r in codes] == [202, 202, 202, 429, 429]
    refused = codes[3]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused["retry-after"]) <= 60
    assert refused["x-ratelimit-limit-requests"] == "3"
    assert refused["x-ratelimit-remaining-requests"] == "0"
    assert codes[0]["x-ratelimit-remaining-requests"] == "2"
    assert codes[2]["x-ratelimit-reset-requests"].endswith("s")
    assert ChatJob.objects.count() == 3  # nothing stored for a refused request


@pytest.mark.django_db
def test_it_applies_a_key_s_own_tighter_limit(tenant_a):
    api_key, key = api_key_create(tenant=tenant_a, name="tight", requests_per_minute=1)
    client = api_client(key)
    urls = message_urls("", client, 3)
    first = client.post(urls[0], {"content": "a"}, format="json")
    second = client.post(urls[1], {"content": "b"}, format="json")
    assert first.status_code == 202 and second.status_code == 429
    assert "API key" in second.json()["error"]["message"]
    # The tenant's other keys are not held back by this key's limit.
    other = api_client(api_key_create(tenant=tenant_a, name="free")[1])
    assert other.post(urls[2], {"content": "c"}, format="json").status_code == 202


@pytest.mark.django_db
def test_it_refuses_when_the_month_is_spent_and_counts_from_the_ledger(tenant_a, client_a):
    set_limits(tenant_a, tokens_per_month=1000)
    UsageRecord.objects.create(
        tenant=tenant_a,
        job_id="00000000-0000-0000-0000-000000000001",
        model="m",
        status="succeeded",
        prompt_tokens=900,
        completion_tokens=90,
    )
    session = new_session(client_a)
    refused = client_a.post(
        f"/api/v1/sessions/{session}/messages", {"content": "hi", "max_tokens": 20}, format="json"
    )
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert refused.json()["error"]["type"] == "insufficient_quota"
    assert int(refused["retry-after"]) > 0


@pytest.mark.django_db
def test_it_holds_a_slot_per_job_and_gives_it_back_when_cancelled(
    tenant_a, client_a, django_capture_on_commit_callbacks
):
    set_limits(tenant_a, max_concurrent_jobs=1)
    first, other = message_urls("", client_a, 2)
    job = client_a.post(first, {"content": "one"}, format="json").json()
    refused = client_a.post(other, {"content": "two"}, format="json")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    with django_capture_on_commit_callbacks(execute=True):  # the settlement runs after commit
        client_a.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert client_a.post(other, {"content": "three"}, format="json").status_code == 202
    usage = UsageRecord.objects.get(job_id=job["id"])
    assert usage.status == "cancelled" and usage.total_tokens == 0


@pytest.mark.django_db
def test_it_settles_a_reservation_to_the_real_use(tenant_a):
    set_limits(tenant_a, tokens_per_month=10_000)
    admit(tenant_a, "job-1", 400)
    month_key = quotas.scopes_for(tenant_a, None)[0].keys(quotas._month()).month
    client = quotas.redis_client()
    assert int(client.get(month_key)) == 400
    # A real job ends milliseconds after its admission. Settled in the very millisecond the
    # counter was seeded, it would be taken for a job the seed may already count (and be left
    # overcharged, the safe way).
    time.sleep(0.002)
    quotas.settle(tenant=tenant_a, api_key=None, job_id="job-1", reserved=400, actual=150)
    assert int(client.get(month_key)) == 150
    # Settling twice (a redelivered job) changes nothing.
    quotas.settle(tenant=tenant_a, api_key=None, job_id="job-1", reserved=400, actual=150)
    assert int(client.get(month_key)) == 150


# Through the running stack: two web replicas, several client processes, the real worker.


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_it_lets_exactly_rpm_requests_through_from_many_processes(
    live_server_url, tenant_a, client_a, key_a
):
    set_limits(tenant_a, requests_per_minute=10)
    results = post_in_parallel(
        message_urls(live_server_url, client_a, 100), key_a, {"content": "hi", "max_tokens": 1}
    )
    codes = [status for status, _, _ in results]
    assert codes.count(202) == 10 and codes.count(429) == 90
    assert all(
        body["error"]["code"] == "rate_limit_exceeded" and "retry-after" in headers
        for status, body, headers in results
        if status == 429
    )
    assert ChatJob.objects.count() == 10


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_it_lets_exactly_max_concurrent_jobs_through_from_many_processes(
    live_server_url, tenant_a, client_a, key_a
):
    set_limits(tenant_a, max_concurrent_jobs=2)
    # "autoglm-idle" is configured for the tests but served by no worker: its jobs stay in
    # flight for the whole burst, whatever the model would have generated.
    urls = message_urls(live_server_url, client_a, 100, model="autoglm-idle")
    results = post_in_parallel(urls, key_a, {"content": "hi", "max_tokens": 1})
    codes = [status for status, _, _ in results]
    assert codes.count(202) == 2 and codes.count(429) == 98
    assert ChatJob.objects.count() == 2


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_it_never_spends_more_than_the_month(live_server_url, tenant_a, client_a, key_a):
    set_limits(tenant_a, tokens_per_month=600)
    results = post_in_parallel(
        message_urls(live_server_url, client_a, 40),
        key_a,
        {"content": "hi", "max_tokens": 50},
        processes=2,
    )
    admitted = [body for status, body, _ in results if status == 202]
    refused = [body for status, body, _ in results if status == 429]
    assert admitted and refused
    assert all(body["error"]["code"] == "insufficient_quota" for body in refused)
    for job in admitted:
        wait_for_job(client_a, job["id"])
    # Reservations given back by finished jobs are reused, but what is spent never passes.
    used = sum(u.total_tokens for u in UsageRecord.objects.filter(tenant=tenant_a))
    assert 0 < used <= 600
    month_key = quotas.scopes_for(tenant_a, None)[0].keys(quotas._month()).month
    assert 0 <= int(quotas.redis_client().get(month_key)) <= 600


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_it_bills_streamed_completions_and_every_ending(
    celery_worker, live_server_url, tenant_a, client_a, key_a
):
    body = {
        "model": "autoglm-demo",
        "stream": True,
        "max_tokens": 8,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    with httpx.stream(
        "POST",
        f"{live_server_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key_a}"},
        timeout=60,
    ) as response:
        text = response.read().decode()
    streamed_id = text.split('"id":"chatcmpl-')[1].split('"')[0]
    session = new_session(client_a)
    failed = client_a.post(
        f"/api/v1/sessions/{session}/messages",
        {"content": "word " * 3000, "max_tokens": 8},
        format="json",
    ).json()
    wait_for_job(client_a, failed["id"])
    streamed = UsageRecord.objects.get(job_id=streamed_id)
    assert streamed.status == "succeeded" and streamed.completion_tokens > 0
    assert streamed.prompt_tokens > 0 and streamed.latency_ms > 0
    assert UsageRecord.objects.get(job_id=failed["id"]).status == "failed"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_it_sends_rate_limit_headers_on_streams_before_the_first_byte(
    live_server_url, tenant_a, key_a
):
    set_limits(tenant_a, requests_per_minute=50, tokens_per_minute=100_000)
    body = {
        "model": "autoglm-demo",
        "stream": True,
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    with httpx.stream(
        "POST",
        f"{live_server_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key_a}"},
        timeout=60,
    ) as response:
        headers = response.headers
        assert headers["x-ratelimit-limit-requests"] == "50"
        assert headers["x-ratelimit-remaining-requests"] == "49"
        assert headers["x-ratelimit-limit-tokens"] == "100000"
        assert int(headers["x-ratelimit-remaining-tokens"]) < 100_000
        response.read()
    listed = httpx.get(
        f"{live_server_url}/api/v1/sessions", headers={"Authorization": f"Bearer {key_a}"}
    )
    assert listed.headers["x-ratelimit-remaining-requests"] == "49"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_dead_worker_s_job_keeps_its_slot_until_it_ends(
    demo_model_dir, celery_worker, tenant_a, client_a, settings, tmp_path
):
    # A worker of its own (own queue) that this test can kill. The sweeper queues its job
    # again (tests/test_recovery.py): still admitted, it holds its slot until it ends.
    settings.AUTOGLM_QUEUE_PREFIX = "leasetest."
    env = {**celery_worker.env, "AUTOGLM_QUEUE_PREFIX": "leasetest."}
    worker = WorkerProcess(tmp_path / "worker.log", env).start()
    set_limits(tenant_a, max_concurrent_jobs=1)

    def post(content: str, **params):
        url = f"/api/v1/sessions/{new_session(client_a)}/messages"
        return client_a.post(url, {"content": content, **params}, format="json")

    try:
        job = post("hi", max_tokens=LONG, temperature=0).json()
        deadline = time.monotonic() + 30
        while ChatJob.objects.get(pk=job["id"]).status != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert post("held").status_code == 429
        os.kill(worker.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while ChatJob.objects.get(pk=job["id"]).status != "queued":
            assert time.monotonic() < deadline, "the dead worker's job was not queued again"
            time.sleep(0.2)
        assert post("still held").status_code == 429
        client_a.post(f"/api/v1/jobs/{job['id']}/cancel")
        assert post("again").status_code == 202
    finally:
        worker.stop()
        for stuck in ChatJob.objects.exclude(status__in=ChatJob.FINISHED):
            job_fail(job=stuck, reason="test worker killed")


# Leases (issue 14, defect 3): the lease set outlives every lease in it; a job that starts
# after its queued lease ran out takes its slot again.


def _leases(tenant):
    """The tenant's lease set: its key and a Redis client."""
    from autoglm_site.redisconn import redis_client

    key = quotas.scopes_for(tenant, None)[0].keys(quotas._month()).leases
    return key, redis_client()


@pytest.mark.django_db
def test_renewing_a_running_lease_does_not_cut_short_a_queued_one(tenant_a, settings):
    set_limits(tenant_a, max_concurrent_jobs=2)
    admit(tenant_a, "queued", 1)
    admit(tenant_a, "running", 1)
    quotas.lease_renew(tenant=tenant_a, api_key=None, job_id="running")
    key, client = _leases(tenant_a)
    # The whole set must live as long as its longest lease, the queued one's.
    assert client.pttl(key) >= (settings.AUTOGLM_QUEUED_LEASE_TTL - 5) * 1000


@pytest.mark.django_db
def test_a_job_starting_after_its_queued_lease_ran_out_holds_a_slot_again(tenant_a, client_a):
    set_limits(tenant_a, max_concurrent_jobs=1)
    url, other = message_urls("", client_a, 2)
    job = client_a.post(url, {"content": "hi"}, format="json").json()
    key, client = _leases(tenant_a)
    client.zrem(key, job["id"])  # queued past AUTOGLM_QUEUED_LEASE_TTL: the lease is gone
    from chat.jobs import job_start

    assert job_start(job_id=job["id"], worker="test") is not None
    assert client.zscore(key, job["id"]) is not None
    refused = client_a.post(other, {"content": "again"}, format="json")
    assert refused.status_code == 429


# Settling (issue 14, defect 13): the month of admission is settled, whatever month it is now;
# the sliding window's sweep copes with any number of expired entries.


@pytest.mark.django_db
def test_a_job_admitted_last_month_settles_last_months_counter(tenant_a):
    from datetime import UTC, datetime

    from autoglm_site.redisconn import redis_client

    scope = quotas.scopes_for(tenant_a, None)[0]
    admitted = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
    last, this = scope.keys("202611").month, scope.keys(quotas._month()).month
    client = redis_client()
    client.set(last, 100)
    client.set(this, 7)
    quotas.settle(
        tenant=tenant_a, api_key=None, job_id="late", reserved=100, actual=40, admitted_at=admitted
    )
    assert (client.get(last), client.get(this)) == ("40", "7")


@pytest.mark.django_db
def test_admission_sweeps_any_number_of_expired_window_entries(tenant_a):
    from autoglm_site.redisconn import redis_client

    set_limits(tenant_a, tokens_per_minute=1_000_000)
    keys = quotas.scopes_for(tenant_a, None)[0].keys(quotas._month())
    client = redis_client()
    old = int(time.time() * 1000) - 120_000
    entries = {f"old-{i}": old for i in range(20_000)}
    client.zadd(keys.tokens, entries)
    client.hset(keys.token_amounts, mapping=dict.fromkeys(entries, 1))
    admit(tenant_a, "new", 5)
    assert client.zcard(keys.tokens) == 1 and client.hlen(keys.token_amounts) == 1
