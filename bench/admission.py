"""What one web process spends to admit a chat completion, and to answer an authenticated read.

It starts a throwaway Redis and PostgreSQL, migrates, bootstraps the demo tenant and key (with
quotas on: every limit set, high enough never to refuse), and runs ONE uvicorn web process with
production settings (DEBUG off). The worker side is a stand-in that answers at once: it beats
the worker registry as a live worker of the model (so admission's capacity check passes, as in
production), pops each Celery message from the model's queue and ends its job through
``chat.jobs`` as a worker would (``job_start``, then ``job_finish`` with a one-token answer: the
job's row, its usage row, the quota settlement, its final event), with no model.

What is measured: 8 concurrent httpx clients each send a non-stream ``POST /v1/chat/completions``
with ``max_tokens`` 1, the whole request as the web process serves it in production: key auth,
input validation, the quota script, the prompt's token count, the job's INSERT, the Celery
publish on commit, then the wait on the job's event stream, the read of its row and the JSON
answer. (With a consumer that only discarded, a non-stream completion would wait for an answer
that never comes, and a stream that hangs up after its first frame would add the cost of
cancelling the job, which a completed request does not pay.) Then ``GET /v1/models`` with the
same key. The web process's CPU time (user + system, all threads, from /proc/<pid>/stat) is
read before and after each batch; the stand-in worker's CPU is its own process's, not counted.

    python bench/admission.py                  # the table
    python bench/admission.py --rounds 5       # more rounds (medians are printed)
    python bench/admission.py --compare ../old # the same against another checkout's web, its
                                               # batches interleaved with this one's
    python bench/admission.py --profile        # cProfile of the web process over one batch
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.processes import Process, free_port, manage, stop_all  # noqa: E402
from devtools.services import PostgresServer, RedisServer  # noqa: E402

MODEL = "autoglm-demo"
CLIENTS = 8
LIMITS = (
    "from tenants.models import Tenant; Tenant.objects.filter(slug='demo').update("
    "requests_per_minute=2_000_000_000, tokens_per_minute=2_000_000_000, "
    "tokens_per_month=10**15, max_concurrent_jobs=1_000_000)"
)
PROMPT = "Tell me, in one short sentence, why the sky looks blue on a clear afternoon."


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Web:
    """One uvicorn web process of the checkout ``root`` (with ``--profile``: under cProfile)."""

    def __init__(self, root: Path, env: dict, log: Path, profile_out: Path | None = None):
        self.root, self.port = root, free_port()
        self.env = {**env, "PYTHONPATH": str(root)}
        self.profile_out = profile_out
        if profile_out:
            command = [sys.executable, str(Path(__file__).resolve()), "--serve-profiled"]
            command += [str(profile_out), str(self.port)]
        else:
            command = [sys.executable, "-m", "uvicorn", "autoglm_site.asgi:application"]
            command += ["--host", "127.0.0.1", "--port", str(self.port), "--lifespan", "on"]
            command += ["--no-access-log", "--log-level", "warning"]
        self.process = Process(command, env=self.env, cwd=root, log=log, stop_timeout=30)

    def start(self) -> Web:
        self.process.start().wait_for_port(self.port, 60)
        return self

    @property
    def pid(self) -> int:
        return self.process.proc.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def admit_once(client: httpx.AsyncClient) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 1,
    }
    response = await client.post("/v1/chat/completions", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"completion: {response.status_code} {response.text}")


async def read_once(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    if response.status_code != 200:
        raise RuntimeError(f"GET /v1/models: {response.status_code} {response.text}")


async def batch(web: Web, key: str, one, count: int) -> tuple[float, float]:
    """``count`` calls of ``one`` from CLIENTS clients: (seconds, web CPU seconds)."""
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=CLIENTS + 4)
    async with httpx.AsyncClient(
        base_url=web.base, headers=headers, timeout=60, limits=limits
    ) as client:
        left = [count]

        async def runner():
            while left[0] > 0:
                left[0] -= 1
                await one(client)

        cpu = cpu_seconds(web.pid)
        started = time.perf_counter()
        await asyncio.gather(*(runner() for _ in range(CLIENTS)))
        elapsed = time.perf_counter() - started
        return elapsed, cpu_seconds(web.pid) - cpu


def consumer_main() -> None:
    """The worker side without a model: a live worker of MODEL that ends each job at once."""
    import threading

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "autoglm_site.settings")
    django.setup()
    from django.db import transaction

    from autoglm_site.redisconn import broker_client
    from chat import jobs
    from chat.worker_registry import worker_beat

    queue = jobs.model_queue(MODEL)

    def answer() -> None:
        while True:
            popped = broker_client().blpop([queue], timeout=1)
            if popped is None:
                continue
            job_id = json.loads(popped[1])["headers"]["id"]  # the task id is the job's id
            job = jobs.job_start(job_id=job_id, worker="bench-standin")
            if job is None:
                continue
            with transaction.atomic():
                jobs.job_finish(
                    job=job,
                    text="ok",
                    prompt_tokens=20,
                    completion_tokens=1,
                    finish_reason="length",
                )

    for _ in range(4):
        threading.Thread(target=answer, daemon=True).start()
    while True:
        worker_beat(worker="bench-standin", models=[MODEL], status={"capacity": CLIENTS})
        time.sleep(2)


def serve_profiled(out: str, port: int) -> None:
    """uvicorn in this process, every thread under its own cProfile of its CPU time (asgiref
    runs the sync parts in threads); their stats are merged and written to ``out`` when it
    stops."""
    import cProfile
    import marshal
    import signal
    import threading

    import uvicorn

    from autoglm_site.asgi import application  # Django set up before profiling starts

    profilers: list[cProfile.Profile] = []

    def start_in_thread(*_):
        profiler = cProfile.Profile(time.thread_time)  # CPU, not wall time: waits are free
        profilers.append(profiler)
        profiler.enable()

    # uvicorn raises the signal again once it has stopped: let it end uvicorn.run, not us.
    signal.signal(signal.SIGTERM, lambda *_: None)
    main = cProfile.Profile(time.thread_time)
    profilers.append(main)
    threading.setprofile(start_in_thread)
    main.enable()
    try:
        uvicorn.run(application, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    finally:
        main.disable()
        merged: dict = {}
        for profiler in profilers:
            profiler.snapshot_stats()  # no disable: that acts on the calling thread only
            for func, (cc, nc, tt, ct, callers) in profiler.stats.items():
                if func in merged:
                    a = merged[func]
                    callers = {**a[4], **callers}
                    merged[func] = (a[0] + cc, a[1] + nc, a[2] + tt, a[3] + ct, callers)
                else:
                    merged[func] = (cc, nc, tt, ct, callers)
        Path(out).write_bytes(marshal.dumps(merged))


def setup(workdir: Path) -> tuple[RedisServer, PostgresServer, dict, str]:
    from workers.demo_model import build_demo_model

    demo = build_demo_model(ROOT / ".models" / "demo-tiny", "tiny", progress=lambda m: None)
    redis, postgres = RedisServer(workdir / "redis"), PostgresServer(workdir / "pg")
    env = {
        **os.environ,
        "SECRET_KEY": "bench-secret-key-not-for-production",  # production: DEBUG off
        "AUTOGLM_DATA_DIR": str(workdir / "data"),
        "AUTOGLM_MODELS": f"{MODEL}={demo}",
        "AUTOGLM_LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("DEBUG", None)
    env.pop("DJANGO_DEBUG", None)
    redis.start()
    env["REDIS_URL"] = redis.url
    os.chmod(workdir, 0o755)  # PostgreSQL runs as its own user
    postgres.start()
    env["DATABASE_URL"] = postgres.url
    manage("migrate", "--noinput", env=env)
    key = json.loads(manage("bootstrap_demo", "--json", env=env))["api_key"]
    manage("shell", "-c", LIMITS, env=env)
    return redis, postgres, env, key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admissions", type=int, default=400, help="per batch")
    parser.add_argument("--reads", type=int, default=800, help="GET /v1/models per batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare", type=Path, help="another checkout: its web, interleaved")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="completions",
        choices=["completions", "reads"],
        help="profile one batch of completions (or of GET /v1/models) in the web process",
    )
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--cprofile", action="store_true", help="cProfile even with py-spy")
    parser.add_argument("--native", action="store_true", help="py-spy: C frames too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="admission-") as tmp:
        workdir = Path(tmp)
        redis, postgres, env, key = setup(workdir)
        log = workdir / "web.log"
        consumer = Process([sys.executable, __file__, "--consumer"], env=env, log=log)
        webs: list[Web] = []
        try:
            consumer.start()
            time.sleep(2)
            if args.profile:
                return profile(env, key, log, args, workdir)
            roots = [ROOT, *([args.compare.resolve()] if args.compare else [])]
            webs = [Web(root, env, log).start() for root in roots]
            asyncio.run(measure(webs, key, args))
        except BaseException:
            print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            stop_all([*(web.process for web in webs), consumer])
            redis.stop()
            postgres.stop()


async def measure(webs: list[Web], key: str, args) -> None:
    for web in webs:  # warm: first requests load the tokenizer, open connections
        await batch(web, key, admit_once, 40)
        await batch(web, key, read_once, 40)
    results = {web.root: {"admit": [], "read": []} for web in webs}
    for round_ in range(args.rounds):
        for web in webs if round_ % 2 == 0 else webs[::-1]:
            seconds, cpu = await batch(web, key, admit_once, args.admissions)
            results[web.root]["admit"].append((args.admissions / seconds, cpu / args.admissions))
            seconds, cpu = await batch(web, key, read_once, args.reads)
            results[web.root]["read"].append((args.reads / seconds, cpu / args.reads))
    print(f"\n{CLIENTS} clients, {args.rounds} rounds; medians (min-max)")
    header = "| web | admissions/s | CPU ms / admission | GET /v1/models/s | CPU ms / GET |"
    print(header + "\n| --- | ---: | ---: | ---: | ---: |")
    for web in webs:
        cells = []
        for kind in ("admit", "read"):
            rates = [r for r, _ in results[web.root][kind]]
            cpus = [c * 1000 for _, c in results[web.root][kind]]
            cells.append(_cell(rates, "{:.0f}"))
            cells.append(_cell(cpus, "{:.2f}"))
        print(f"| {web.root} | " + " | ".join(cells) + " |")


def _cell(values: list[float], fmt: str) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{fmt.format(mid)} ({fmt.format(low)}-{fmt.format(high)})"


def profile(env: dict, key: str, log: Path, args, workdir: Path) -> None:
    """One batch of completions under a profiler: py-spy where it is installed (it samples
    every thread, C code included, at little cost), else cProfile in every thread."""
    spy = Path(sys.executable).parent / "py-spy"
    if spy.exists() and not args.cprofile:
        return profile_sampled(spy, env, key, log, args, workdir)
    import pstats

    out = workdir / "web.prof"
    web = Web(ROOT, env, log, profile_out=out).start()
    try:
        asyncio.run(batch(web, key, admit_once, 20))  # warm
        seconds, cpu = asyncio.run(batch(web, key, admit_once, args.admissions))
    finally:
        stop_all([web.process])
    print(
        f"profiled: {args.admissions} completions, {cpu / args.admissions * 1000:.2f} ms CPU each"
    )
    stats = pstats.Stats(str(out))
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(25)


def profile_sampled(spy: Path, env: dict, key: str, log: Path, args, workdir: Path) -> None:
    import signal
    import subprocess
    from collections import Counter

    out = workdir / "web.spy"
    web = Web(ROOT, env, log).start()
    try:
        one, count = (
            (read_once, args.reads) if args.profile == "reads" else (admit_once, args.admissions)
        )
        asyncio.run(batch(web, key, one, 40))  # warm
        command = [str(spy), "record", "-p", str(web.pid), "-f", "raw", "-o", str(out)]
        # --gil: only the thread holding the GIL, the one running Python (waits are free).
        command += ["-r", "250", "--gil", "--nonblocking"] + (["--native"] if args.native else [])
        recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1)
        seconds, cpu = asyncio.run(batch(web, key, one, count))
        recorder.send_signal(signal.SIGINT)
        recorder.wait(60)
    finally:
        stop_all([web.process])
    print(
        f"profiled: {args.admissions} completions, {cpu / args.admissions * 1000:.2f} ms CPU each"
    )
    inclusive, own, total = Counter(), Counter(), 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [
            f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].rstrip(")") for f in stack.split(";")[1:]
        ]
        total += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
        if frames:
            own[frames[-1]] += int(count)
    print(
        f"{total} samples of the thread holding the GIL; inclusive share (a function's "
        "samples, callees in)"
    )
    for frame, count in inclusive.most_common(args.top):
        print(f"{100 * count / total:6.1f}%  {frame}")
    print("own share (the innermost frame)")
    for frame, count in own.most_common(25):
        print(f"{100 * count / total:6.1f}%  {frame}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--consumer"]:
        consumer_main()
    elif sys.argv[1:2] == ["--serve-profiled"]:
        serve_profiled(sys.argv[2], int(sys.argv[3]))
    else:
        main()
