"""Concurrent writes on one session, on real PostgreSQL: deleting it while its job finishes,
and two messages posted to it at once. Each race is forced in one order with a third
connection that holds a lock, so the tests do not depend on timing."""

import threading
import time

import pytest
from django.db import connection, connections, transaction

from chat import jobs
from chat.models import ChatJob, ChatSession, Message
from tenants.models import UsageRecord

from .conftest import api_client

pytestmark = pytest.mark.django_db(transaction=True)


class Rollback(Exception):
    pass


class InThread(threading.Thread):
    """Runs ``work`` on its own database connection; keeps its result or its exception."""

    def __init__(self, work):
        super().__init__(daemon=True)
        self.work = work
        self.pid: int | None = None
        self.started_work = threading.Event()
        self.result = self.error = None

    def run(self):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                self.pid = cursor.fetchone()[0]
            self.started_work.set()
            self.result = self.work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test to assert on
            self.error = exc
        finally:
            self.started_work.set()
            connections.close_all()

    def outcome(self, timeout: float = 30):
        self.join(timeout)
        assert not self.is_alive(), "the thread is still blocked"
        if self.error is not None:
            raise self.error
        return self.result


def start(work) -> InThread:
    thread = InThread(work)
    thread.start()
    thread.started_work.wait(10)
    return thread


def wait_until_blocked(thread: InThread, timeout: float = 10) -> None:
    """Wait until the thread's connection waits for a lock another transaction holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [thread.pid]
            )
            row = cursor.fetchone()
        if row and row[0] == "Lock":
            return
        time.sleep(0.02)
    raise AssertionError("the thread never waited for a lock")


def hold_usage_insert(job: ChatJob, release: threading.Event) -> InThread:
    """A transaction that has inserted the job's usage row and waits: ``job_finish``, which
    inserts it too, blocks there until ``release`` (then this one rolls back)."""
    inserted = threading.Event()

    def work():
        try:
            with transaction.atomic():
                UsageRecord.objects.create(tenant_id=job.tenant_id, job_id=job.id, model=job.model)
                inserted.set()
                release.wait(30)
                raise Rollback
        except Rollback:
            pass

    thread = start(work)
    assert inserted.wait(10)
    return thread


def running_job(client) -> ChatJob:
    session = client.post("/api/v1/sessions", {}, format="json").json()
    posted = client.post(
        f"/api/v1/sessions/{session['id']}/messages", {"content": "hi"}, format="json"
    )
    assert posted.status_code == 202
    return jobs.job_start(job_id=posted.json()["id"], worker="test")


def finish(job: ChatJob):
    return lambda: jobs.job_finish(
        job=job, text="the answer", prompt_tokens=5, completion_tokens=3, finish_reason="stop"
    )


def test_it_deletes_a_session_while_its_job_is_finishing(client_a):
    """Issue 14, defect 5: the job stores its answer while the session is being deleted. The
    delete used to see the session's messages before the answer was committed, then delete the
    session under it: 500, IntegrityError on chat_message."""
    job = running_job(client_a)
    release = threading.Event()
    holder = hold_usage_insert(job, release)
    finishing = start(finish(job))
    wait_until_blocked(finishing)  # the answer is written, the job's ending not committed yet
    deleting = start(lambda: client_a.delete(f"/api/v1/sessions/{job.session_id}"))
    wait_until_blocked(deleting)
    release.set()
    holder.outcome()
    finishing.outcome()
    assert deleting.outcome().status_code == 204
    assert Message.objects.count() == 0
    usage = UsageRecord.objects.get(job_id=job.id)
    assert (usage.prompt_tokens, usage.completion_tokens) == (5, 3)


def test_a_job_that_ends_after_its_session_was_deleted_is_billed(client_a):
    """Issue 14, defect 5: the job's row used to go with its session, so a job that ended
    after the deletion wrote no usage row and its reservation was never settled."""
    job = running_job(client_a)
    assert client_a.delete(f"/api/v1/sessions/{job.session_id}").status_code == 204
    finish(job)()
    usage = UsageRecord.objects.get(job_id=job.id)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.status) == (5, 3, "succeeded")
    assert Message.objects.count() == 0  # the answer of a deleted conversation is not kept
    row = ChatJob.objects.get(pk=job.pk)
    assert row.session_id is None and row.output == "" and row.assistant_message_id is None
    # The job went with its session as far as the API is concerned.
    response = client_a.get(f"/api/v1/jobs/{job.id}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_two_messages_posted_at_once_to_one_session_queue_one_job(client_a, key_a):
    """Issue 14, defect 14: both posts were stored and queued, interleaving the history. They
    are made to wait on the session's row together, then let go at once."""
    session = client_a.post("/api/v1/sessions", {}, format="json").json()
    url = f"/api/v1/sessions/{session['id']}/messages"
    release, locked = threading.Event(), threading.Event()

    def hold_session():
        with transaction.atomic():
            ChatSession.objects.select_for_update().get(pk=session["id"])
            locked.set()
            release.wait(30)

    holder = start(hold_session)
    assert locked.wait(10)
    posts = [
        start(lambda n=n: api_client(key_a).post(url, {"content": f"m{n}"}, format="json"))
        for n in (1, 2)
    ]
    for post in posts:
        wait_until_blocked(post)
    release.set()
    holder.outcome()
    responses = sorted((post.outcome() for post in posts), key=lambda r: r.status_code)
    assert [r.status_code for r in responses] == [202, 409]
    assert responses[1].json()["error"]["code"] == "conflict"
    assert ChatJob.objects.count() == 1 and Message.objects.count() == 1
