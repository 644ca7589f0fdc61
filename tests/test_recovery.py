"""Recovery without the broker's visibility timeout (issue 14, defects 2, 4 and 11): worker
heartbeats, the sweeper, the outbox, the attempts cap, and Redis losing its data.

The sweeper's rules run here in the test process (``recovery.sweep``) on committed rows or in
the test's transaction; the end-to-end tests use real worker processes, whose sweeper runs
every second with a 3-second worker TTL (tests/conftest.py).
"""

import os
import signal
import time

import httpx
import pytest
import redis
from kombu.exceptions import OperationalError

from autoglm_site.redisconn import broker_client, redis_client
from chat import jobs, recovery, worker_registry
from chat.models import ChatJob, Message
from tenants import quotas
from tenants.models import UsageRecord

from .conftest import WorkerProcess, wait_for_job

ESSAY = "Write an essay about the sea."


def new_job(client, model: str = "autoglm-demo", **params) -> dict:
    session = client.post("/api/v1/sessions", {"model": model}, format="json").json()
    response = client.post(
        f"/api/v1/sessions/{session['id']}/messages",
        {"content": ESSAY, "max_tokens": 8, **params},
        format="json",
    )
    assert response.status_code == 202, response.content
    return response.json()


def claimed_by_dead_worker(job_id: str, attempts: int) -> ChatJob:
    """The job as a worker that has since died left it: running, claimed ``attempts`` times."""
    ChatJob.objects.filter(pk=job_id).update(
        status=ChatJob.Status.RUNNING, worker="dead-worker", attempts=attempts
    )
    return ChatJob.objects.get(pk=job_id)


def sweep_past_the_ttl() -> recovery.SweepReport:
    """Two sweeps a worker TTL apart: the first sees the dead worker's key gone, the second
    judges it dead. This test holds the sweeper's turn meanwhile, as a worker's sweep does: the
    suite's worker, which cannot see this test's uncommitted jobs, would otherwise sweep in
    between and forget the dead worker's missing-since mark."""
    client = redis_client()
    client.set(recovery.SWEEP_TURN_KEY, "test", ex=10)
    try:
        recovery.sweep()
        time.sleep(1.1)
        return recovery.sweep()
    finally:
        client.delete(recovery.SWEEP_TURN_KEY)


def lease_key(tenant) -> str:
    return quotas.scopes_for(tenant, None)[0].keys(quotas._month()).leases


def leases(tenant) -> dict[str, float]:
    return dict(redis_client().zrange(lease_key(tenant), 0, -1, withscores=True))


# The rules, on the test's own transaction (no worker sees these rows).


@pytest.mark.django_db
def test_a_dead_workers_job_is_queued_again_and_keeps_its_slot(
    client_a, tenant_a, settings, django_capture_on_commit_callbacks
):
    settings.AUTOGLM_WORKER_TTL = 1
    job = new_job(client_a, model="autoglm-idle")
    claimed_by_dead_worker(job["id"], attempts=1)
    redis_client().zrem(
        quotas.scopes_for(tenant_a, None)[0].keys(quotas._month()).leases, job["id"]
    )
    with django_capture_on_commit_callbacks(execute=True):
        report = sweep_past_the_ttl()
    assert report.requeued == [job["id"]]
    row = ChatJob.objects.get(pk=job["id"])
    assert (row.status, row.worker, row.attempts) == ("queued", "", 1)
    assert row.sent_at is not None  # a new message went out
    assert job["id"] in leases(tenant_a)  # its slot is held again


@pytest.mark.django_db
def test_a_live_workers_job_is_left_alone(client_a, settings):
    settings.AUTOGLM_WORKER_TTL = 1
    job = new_job(client_a, model="autoglm-idle")
    claimed_by_dead_worker(job["id"], attempts=1)
    ChatJob.objects.filter(pk=job["id"]).update(worker="alive-worker")
    worker_registry.worker_beat(worker="alive-worker", models=["autoglm-idle"])
    recovery.sweep()
    time.sleep(1.1)
    worker_registry.worker_beat(worker="alive-worker", models=["autoglm-idle"])
    assert not recovery.sweep().requeued
    assert ChatJob.objects.get(pk=job["id"]).status == "running"


@pytest.mark.django_db
def test_a_job_that_keeps_killing_its_worker_fails_as_worker_crashed(
    client_a, tenant_a, settings, django_capture_on_commit_callbacks
):
    settings.AUTOGLM_WORKER_TTL = 1
    job = new_job(client_a, model="autoglm-idle")
    claimed_by_dead_worker(job["id"], attempts=settings.AUTOGLM_MAX_ATTEMPTS)
    with django_capture_on_commit_callbacks(execute=True):
        report = sweep_past_the_ttl()
    assert report.crashed == [job["id"]]
    row = ChatJob.objects.get(pk=job["id"])
    assert (row.status, row.error_code) == ("failed", "worker_crashed")
    assert UsageRecord.objects.filter(job_id=job["id"]).exists()
    assert job["id"] not in leases(tenant_a)  # its slot is back
    body = client_a.get(f"/api/v1/jobs/{job['id']}").json()
    assert body["error"]["code"] == "worker_crashed"


@pytest.mark.django_db
def test_a_duplicate_message_of_a_running_job_is_dropped(client_a):
    job = new_job(client_a, model="autoglm-idle")
    assert jobs.job_start(job_id=job["id"], worker="first") is not None
    assert jobs.job_start(job_id=job["id"], worker="second") is None
    row = ChatJob.objects.get(pk=job["id"])
    assert (row.worker, row.attempts) == ("first", 1)


@pytest.mark.django_db
def test_a_superseded_attempt_writes_nothing(client_a, django_capture_on_commit_callbacks):
    job = new_job(client_a, model="autoglm-idle")
    first = jobs.job_start(job_id=job["id"], worker="taken-for-dead")
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs.job_requeue(job=first, why="test")
    second = jobs.job_start(job_id=job["id"], worker="second")
    assert not jobs.job_still_claimed(job=first) and jobs.job_still_claimed(job=second)
    kwargs = {"prompt_tokens": 3, "completion_tokens": 2, "finish_reason": "stop"}
    jobs.job_finish(job=first, text="stale", **kwargs)
    jobs.job_fail(job=first, reason="stale", attempt=first.attempts)
    assert ChatJob.objects.get(pk=job["id"]).status == "running"
    jobs.job_finish(job=second, text="fresh", **kwargs)
    answers = Message.objects.filter(session_id=second.session_id, role="assistant")
    assert [m.content for m in answers] == ["fresh"]


@pytest.mark.django_db
def test_a_job_the_broker_refused_is_kept_and_sent_by_the_sweeper(
    client_a, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.AUTOGLM_WORKER_TTL = 1

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to the broker. Connection refused.")

    monkeypatch.setattr(jobs.app, "send_task", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        job = new_job(client_a, model="autoglm-idle")  # answers 202: the job is stored
    assert ChatJob.objects.get(pk=job["id"]).sent_at is None  # in the outbox
    monkeypatch.undo()
    time.sleep(1.1)
    assert recovery.sweep().resent == [job["id"]]
    assert ChatJob.objects.get(pk=job["id"]).sent_at is not None


@pytest.mark.django_db
def test_a_month_counter_that_redis_lost_counts_the_jobs_in_flight(
    client_a, tenant_a, django_capture_on_commit_callbacks
):
    held = new_job(client_a, model="autoglm-idle", max_tokens=100)
    reserved = ChatJob.objects.get(pk=held["id"]).reserved_tokens
    month_key = quotas.scopes_for(tenant_a, None)[0].keys(quotas._month()).month
    redis_client().delete(month_key)  # Redis restarted without persistence
    second = new_job(client_a, model="autoglm-idle", max_tokens=50)
    both = reserved + ChatJob.objects.get(pk=second["id"]).reserved_tokens
    assert int(redis_client().get(month_key)) == both
    # Settling the first takes its reservation off again: no overspend, no negative drift.
    with django_capture_on_commit_callbacks(execute=True):
        jobs.job_fail(job=ChatJob.objects.get(pk=held["id"]), reason="test")
    assert int(redis_client().get(month_key)) == both - reserved


@pytest.mark.django_db
def test_slots_of_jobs_in_flight_come_back_after_redis_lost_its_data(client_a, tenant_a):
    job = new_job(client_a, model="autoglm-idle")
    recovery.sweep()  # Redis has its data: nothing to restore
    client = redis_client()
    client.delete(recovery.EPOCH_KEY)
    client.delete(lease_key(tenant_a))
    assert recovery.sweep().leases_restored >= 1
    assert job["id"] in leases(tenant_a)


# End to end: real worker processes.


def own_worker(celery_worker, settings, tmp_path, name: str) -> WorkerProcess:
    """A worker on a queue of this test's own, so no other worker takes its jobs."""
    settings.AUTOGLM_QUEUE_PREFIX = f"{name}."
    env = {**celery_worker.env, "AUTOGLM_QUEUE_PREFIX": f"{name}."}
    return WorkerProcess(tmp_path / f"{name}-{time.monotonic_ns()}.log", env).start()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_killed_workers_job_is_answered_once_by_another_worker_within_seconds(
    celery_worker, client_a, settings, tmp_path, live_server_url, key_a
):
    # The broker's visibility timeout is an hour (the default): the sweeper must do it.
    first = own_worker(celery_worker, settings, tmp_path, "killed")
    job = new_job(client_a, max_tokens=1500, temperature=0)
    try:
        deadline = time.monotonic() + 30
        while ChatJob.objects.get(pk=job["id"]).status != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(first.proc.pid, signal.SIGKILL)
    finally:
        first.stop()
    killed_at = time.monotonic()
    second = own_worker(celery_worker, settings, tmp_path, "killed")
    try:
        done = wait_for_job(client_a, job["id"], timeout=40)
    finally:
        second.stop()
    assert done["status"] == "succeeded", done
    assert time.monotonic() - killed_at < 40
    row = ChatJob.objects.get(pk=job["id"])
    assert row.attempts == 2
    answers = Message.objects.filter(session_id=row.session_id, role="assistant")
    assert answers.count() == 1 and answers.get().content == done["message"]["content"]
    # Listeners were told the second attempt started over.
    with httpx.stream(
        "GET",
        f"{live_server_url}/api/v1/jobs/{job['id']}/events",
        headers={"Authorization": f"Bearer {key_a}"},
        timeout=30,
    ) as response:
        kinds = [line[7:] for line in response.iter_lines() if line.startswith("event: ")]
    assert "reset" in kinds and kinds[-1] == "done"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_job_whose_message_was_lost_is_sent_again(celery_worker, client_a, settings, tmp_path):
    settings.AUTOGLM_QUEUE_PREFIX = "lost."
    job = new_job(client_a)
    # Redis restarted without persistence: the queue and its message are gone.
    deleted = broker_client().delete(jobs.model_queue("autoglm-demo"))
    assert deleted == 1
    worker = own_worker(celery_worker, settings, tmp_path, "lost")
    try:
        done = wait_for_job(client_a, job["id"], timeout=30)
    finally:
        worker.stop()
    assert done["status"] == "succeeded", done


@pytest.mark.django_db
def test_growing_a_reservation_never_restarts_a_lost_month_counter_from_zero(client_a, tenant_a):
    # Found by make chaos: after a Redis restart, a job growing its reservation made the month
    # counter anew from 0 (without a TTL), 360,802 tokens short of the ledger.
    job = ChatJob.objects.get(pk=new_job(client_a, model="autoglm-idle")["id"])
    month_key = quotas.scopes_for(tenant_a, None)[0].keys(quotas._month()).month
    redis_client().delete(month_key)
    assert quotas.extend(tenant=tenant_a, api_key=None, job_id=str(job.id), extra=10)
    assert redis_client().get(month_key) is None  # the next admission seeds it from the ledger


# Outages at a job's end or in its middle (found by make chaos).


@pytest.mark.django_db(transaction=True)
def test_a_job_ending_while_redis_is_down_is_settled_once_it_is_back(
    client_a, tenant_a, monkeypatch
):
    from autoglm_site import redisconn
    from devtools.processes import free_port

    job = new_job(client_a, model="autoglm-idle")
    row = jobs.job_start(job_id=job["id"], worker="test")
    real = redisconn.redis_client()
    nowhere = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setattr(redisconn, "_sync_client", nowhere)  # Redis goes away
    jobs.job_fail(job=row, reason="test", attempt=row.attempts)  # must not raise
    assert ChatJob.objects.get(pk=job["id"]).status == "failed"
    monkeypatch.setattr(redisconn, "_sync_client", real)  # and comes back
    deadline = time.monotonic() + 10
    while job["id"] in leases(tenant_a):
        assert time.monotonic() < deadline, "the slot was never given back"
        time.sleep(0.1)


@pytest.mark.django_db(transaction=True)
def test_a_job_cut_off_by_an_outage_is_queued_again_not_failed(client_a, monkeypatch):
    from django.db import OperationalError

    from workers import job_runner

    job = new_job(client_a, model="autoglm-idle")

    def database_restarted(job):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(job_runner, "_run", database_restarted)
    monkeypatch.setattr(job_runner, "worker_id", lambda: "test-worker")
    job_runner.job_run(job_id=job["id"])
    row = ChatJob.objects.get(pk=job["id"])
    assert (row.status, row.attempts, row.worker) == ("queued", 1, "")


@pytest.mark.django_db
def test_a_slot_held_again_for_a_job_that_ended_meanwhile_is_given_back(
    client_a, tenant_a, monkeypatch, django_capture_on_commit_callbacks
):
    # Found by make chaos: the sweeper listed the jobs in flight, one ended and settled, and
    # then the sweeper held its slot again, for a lease period after every job had ended.
    job = new_job(client_a, model="autoglm-idle")
    redis_client().delete(recovery.EPOCH_KEY)
    hold = quotas.lease_hold

    def ends_first(**kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            jobs.job_fail(job=ChatJob.objects.get(pk=job["id"]), reason="ended meanwhile")
        hold(**kwargs)

    monkeypatch.setattr(quotas, "lease_hold", ends_first)
    recovery.sweep()
    assert job["id"] not in leases(tenant_a)


@pytest.mark.django_db
def test_a_dead_workers_job_that_was_cancelled_ends_instead_of_running_again(
    client_a, settings, django_capture_on_commit_callbacks
):
    from chat import events

    settings.AUTOGLM_WORKER_TTL = 1
    job = new_job(client_a, model="autoglm-idle")
    claimed_by_dead_worker(job["id"], attempts=1)
    events.cancel_request(job["id"])  # asked while it ran (or its session was deleted)
    with django_capture_on_commit_callbacks(execute=True):
        report = sweep_past_the_ttl()
    assert report.cancelled == [job["id"]]
    assert ChatJob.objects.get(pk=job["id"]).status == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_a_job_claimed_while_redis_is_down_is_not_left_running_on_a_live_worker(
    client_a, monkeypatch
):
    # Found by make chaos: the claim was written, then taking the slot back raised, and the
    # task ended with the job `running` on a live worker, which the sweeper leaves alone.
    from autoglm_site import redisconn
    from devtools.processes import free_port

    job = new_job(client_a, model="autoglm-idle")
    nowhere = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setattr(redisconn, "_sync_client", nowhere)
    claimed = jobs.job_start(job_id=job["id"], worker="live-worker")  # must not raise
    assert claimed is not None and claimed.status == "running"


@pytest.mark.django_db(transaction=True)
def test_a_settlement_deferred_past_a_reseed_does_not_take_the_reservation_off_twice(
    client_a, tenant_a, monkeypatch
):
    # Found by make chaos (1,562 tokens apart): a job ended while Redis was down, Redis came
    # back empty, an admission reseeded the month from the ledger (which holds the job), and
    # then the deferred settlement took the job's reservation off that counter again.
    from autoglm_site import redisconn
    from devtools.processes import free_port
    from tenants import selectors

    job = new_job(client_a, model="autoglm-idle", max_tokens=100)
    row = jobs.job_start(job_id=job["id"], worker="test")
    real = redisconn.redis_client()
    nowhere = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setattr(redisconn, "_sync_client", nowhere)  # Redis goes away...
    settled = []
    monkeypatch.setattr(jobs, "_retry_in_background", lambda *args: settled.append(args))
    jobs.job_fail(job=row, reason="test", attempt=row.attempts, produced=("x", 7, 3))
    monkeypatch.setattr(redisconn, "_sync_client", real)  # ...and comes back empty
    month_key = quotas.scopes_for(tenant_a, None)[0].keys(quotas._month()).month
    real.delete(month_key)
    second = new_job(client_a, model="autoglm-idle", max_tokens=50)  # reseeds the month
    for *_, write in settled:  # the deferred settlement (and final event) land now
        write()
    second_reserved = ChatJob.objects.get(pk=second["id"]).reserved_tokens
    ledger = selectors.usage_month(tenant=tenant_a)
    assert int(real.get(month_key)) == ledger + second_reserved


def test_a_heartbeat_whose_load_cannot_be_read_still_beats():
    """A failure to read the engines' load (or to publish the metrics) must not stop the beat:
    the worker would be taken for dead and its jobs run a second time elsewhere."""
    from workers.heartbeat import WorkerHeartbeat, worker_id

    def unreadable() -> dict:
        raise RuntimeError("the engine's stats are unreadable")

    try:
        WorkerHeartbeat(["autoglm-idle"], status=unreadable)._beat()
        beating = {info.id: info for info in worker_registry.live_workers()}
        assert beating[worker_id()].models == ["autoglm-idle"]
    finally:
        worker_registry.worker_gone(worker=worker_id())
