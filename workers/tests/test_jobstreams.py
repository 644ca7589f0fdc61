"""The worker's cancel listener (real Redis): it sees the cancels of its own jobs and keeps
nothing of the others'."""

import time
import uuid

from chat import events
from workers.jobstreams import CancelListener


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_it_sees_a_watched_jobs_cancel_asked_before_or_after_it_watched():
    listener = CancelListener()
    early, late = str(uuid.uuid4()), str(uuid.uuid4())
    events.cancel_request(early)
    listener.watch(early)
    listener.watch(late)
    events.cancel_request(late)
    assert listener.is_cancelled(early)
    assert wait_until(lambda: listener.is_cancelled(late))
    listener.forget(early)
    listener.forget(late)
    assert not listener.is_cancelled(early) and not listener.is_cancelled(late)


def test_the_cancels_of_other_workers_jobs_leave_nothing_behind():
    listener = CancelListener()
    mine = str(uuid.uuid4())
    listener.watch(mine)
    for _ in range(500):  # every worker hears every cancel broadcast
        events.cancel_request(uuid.uuid4())
    events.cancel_request(mine)
    assert wait_until(lambda: listener.is_cancelled(mine))
    listener.forget(mine)
    assert listener.remembered() == 0


def test_a_cancel_broadcast_while_it_was_disconnected_is_seen_after_it_reconnects():
    from autoglm_site.redisconn import redis_client

    listener = CancelListener()
    job = str(uuid.uuid4())
    listener.watch(job)
    redis_client().client_kill_filter(_type="pubsub")  # Redis drops the subscription
    # The cancel's key is written; its broadcast went out while no one listened.
    redis_client().set(events.cancel_key(job), "1", ex=60)
    assert wait_until(lambda: listener.is_cancelled(job), timeout=10)
    listener.forget(job)
