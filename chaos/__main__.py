"""`python -m chaos [--jobs N] [--streams N] [--soak N] [--only NAME]`: see
``chaos/__init__.py``."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import threading
import time
from collections import Counter

from chaos.stack import ChaosStack

DEADLINE_S = 300  # after the last fault, every job must have ended within this


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="make chaos")
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--soak", type=int, default=2000)
    parser.add_argument("--only", choices=["faults", "streams", "soak"], action="append")
    args = parser.parse_args(argv)
    only = set(args.only or ["faults", "streams", "soak"])
    stack = ChaosStack()
    print(f"==> starting PostgreSQL, Redis, the web and two workers under {stack.dir}", flush=True)
    stack.start()
    try:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "autoglm_site.settings")
        import django

        django.setup()
        tenant, key, secret = _tenant()
        outcomes = []
        if "faults" in only:
            outcomes.append(_faults(stack, tenant, key, secret, args.jobs))
        if "streams" in only:
            outcomes.append(_streams(stack, tenant, key, secret, args.streams))
        if "soak" in only:
            outcomes.append(_soak(stack, tenant, key, secret, args.soak))
    finally:
        stack.stop()
    _table(outcomes)
    return 0 if all(outcome.clean for outcome in outcomes) else 1


def _tenant():
    from tenants.services import api_key_create, tenant_create

    tenant = tenant_create(
        slug="chaos",
        name="Chaos",
        requests_per_minute=1_000_000,
        tokens_per_minute=1_000_000_000,
        tokens_per_month=1_000_000_000,
        max_concurrent_jobs=10_000,
    )
    key, secret = api_key_create(tenant=tenant, name="chaos")
    return tenant, key, secret


def _faults(stack: ChaosStack, tenant, key, secret: str, count: int):
    from chaos.checks import Outcome, account, session_job, wait_until_ended
    from chaos.load import api_client, submit_job

    outcome = Outcome(f"faults: {count} jobs, 2 workers")
    print(f"==> {outcome.name}: worker 1 SIGKILLed 3 times, Redis and PostgreSQL restarted")
    spacing = 90 / count  # submissions over 90 s, while the faults happen
    faults = [
        (8, "kill worker 1", lambda: stack.kill_worker(1)),
        (18, "kill worker 1", lambda: stack.kill_worker(1)),
        (26, "restart Redis (3 s down, data lost)", stack.restart_redis),
        (36, "kill worker 1", lambda: stack.kill_worker(1)),
        (46, "restart PostgreSQL", stack.restart_postgres),
    ]
    started = time.monotonic()

    def inject():
        for at, what, fault in faults:
            time.sleep(max(0, at - (time.monotonic() - started)))
            print(f"    t={time.monotonic() - started:5.1f}s  {what}", flush=True)
            fault()

    injector = threading.Thread(target=inject)
    injector.start()

    async def submit_all():
        async with api_client(stack.url, secret) as client:

            async def one(index: int):
                await asyncio.sleep(index * spacing)
                return await submit_job(
                    client, max_tokens=random.randint(200, 1500), job_of_session=session_job
                )

            return await asyncio.gather(*(one(i) for i in range(count)))

    ids = asyncio.run(submit_all())
    injector.join()
    accepted = [job_id for job_id in ids if job_id]
    refused = count - len(accepted)
    outcome.notes.append(f"{refused} submissions refused (503/429) until they gave up")
    took = wait_until_ended(accepted, DEADLINE_S)
    outcome.notes.append(f"all ended {took:.0f} s after the last submission")
    crashed = stack.dead_workers()
    if crashed:
        outcome.notes.append(f"workers that exited by themselves: {crashed}")
    return account(outcome, accepted, tenant, key)


def _streams(stack: ChaosStack, tenant, key, secret: str, count: int):
    from chaos.checks import Outcome, account, wait_until_ended
    from chaos.load import api_client, cut_stream
    from chat.models import ChatJob

    max_tokens = 1500
    outcome = Outcome(f"streams: {count} cut after the first chunk")
    print(f"==> {outcome.name}")

    async def cut_all():
        gate = asyncio.Semaphore(10)
        async with api_client(stack.url, secret) as client:

            async def one():
                async with gate:
                    return await cut_stream(client, max_tokens=max_tokens)

            return await asyncio.gather(*(one() for _ in range(count)))

    ids = [job_id for job_id in asyncio.run(cut_all()) if job_id]
    ids = [str(ChatJob.objects.get(id=job_id).id) for job_id in ids]  # hex -> uuid text
    wait_until_ended(ids, 60)
    account(outcome, ids, tenant, key)
    for job in ChatJob.objects.filter(pk__in=ids):
        produced = job.completion_tokens or 0
        if job.status != ChatJob.Status.CANCELLED or not 0 < produced < max_tokens:
            outcome.wrong += 1
    outcome.notes.append(f"{outcome.wrong} streams not cancelled with a partial answer billed")
    return outcome


# The soak runs in parts, the gauges read after each (see the leak rule in _soak).
SOAK_PARTS = 4


def _soak(stack: ChaosStack, tenant, key, secret: str, count: int):
    from chaos.checks import Outcome, held_slots, month_shortfall
    from chaos.load import api_client, short_completion
    from chaos.resources import fd_kinds, snapshot

    outcome = Outcome(f"soak: {count} short jobs")
    print(f"==> {outcome.name}")

    async def run(n: int) -> list[int]:
        gate = asyncio.Semaphore(32)
        async with api_client(stack.url, secret) as client:

            async def one():
                async with gate:
                    return await short_completion(client)

            return await asyncio.gather(*(one() for _ in range(n)))

    asyncio.run(run(min(count, 300)))  # warm up: every thread, pool and connection made
    time.sleep(8)  # past the stream TTL
    services = {stack.redis.port: "Redis", stack.postgres.port: "PostgreSQL"}

    def gauges() -> tuple[dict, Counter]:
        pids = stack.worker_pids()
        return snapshot(pids), sum((fd_kinds(pid, services) for pid in pids), Counter())

    points = [gauges()]
    codes: list[int] = []
    started, paused = time.monotonic(), 0.0
    for index in range(SOAK_PARTS):
        size = count // SOAK_PARTS + (1 if index < count % SOAK_PARTS else 0)
        codes += asyncio.run(run(size))
        time.sleep(8)
        paused += 8
        points.append(gauges())
    rate = count / (time.monotonic() - started - paused)
    outcome.jobs = count
    outcome.statuses.update(str(code) for code in codes)
    outcome.wrong = sum(1 for code in codes if code != 200)
    outcome.leaked = held_slots(tenant, key)
    outcome.overspent = month_shortfall(tenant, key)
    outcome.notes.append(f"{rate:.0f} jobs/s")
    values = [point for point, _ in points]
    for name in values[0]:
        outcome.notes.append(f"{name}: " + " → ".join(str(value[name]) for value in values))
    # A leak grows in every part; a pool reaching its high-water mark grows less and less
    # often (each worker's Redis pool grows to what its threads use at once, which a rare
    # peak can still raise late). So a gauge leaks when each part takes it past every earlier
    # high. Memory may settle a little higher (allocator caches).
    for name in ("worker fds", "db connections", "redis keys", "redis keys w/o TTL"):
        series = [value[name] for value in values]
        rises = [series[i] - max(series[:i]) for i in range(1, len(series))]
        if all(rise > 0 for rise in rises):
            outcome.leaked += rises[-1]
    for index in range(1, len(points)):
        seen = Counter()
        for _, kinds in points[:index]:
            seen |= kinds
        if grown := points[index][1] - seen:
            outcome.notes.append(f"descriptors opened in part {index}: {dict(grown)}")
    if values[-1]["worker RSS (MB)"] > values[0]["worker RSS (MB)"] * 1.05:
        outcome.leaked += 1
        outcome.notes.append("worker memory grew by more than 5%")
    return outcome


def _table(outcomes) -> None:
    columns = ["lost", "stuck", "duplicated", "unbilled", "leaked", "overspent", "wrong"]
    print()
    print(f"{'scenario':<36}{'jobs':>6}" + "".join(f"{c:>11}" for c in columns))
    for outcome in outcomes:
        cells = "".join(f"{getattr(outcome, c):>11}" for c in columns)
        print(f"{outcome.name:<36}{outcome.jobs:>6}{cells}")
    for outcome in outcomes:
        print(f"\n{outcome.name}: {dict(outcome.statuses)}")
        for note in outcome.notes:
            print(f"  - {note}")
    verdict = "clean" if all(o.clean for o in outcomes) else "FAILURES"
    print(f"\n==> {verdict}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
