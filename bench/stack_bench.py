"""OpenAI-compatible servers under load, measured as a client sees them.

``--target stack`` (default): the full autoglm stack, HTTP -> web (uvicorn) -> Redis/Celery ->
worker engine -> SSE back; it starts its own Redis and PostgreSQL, the web server and one worker
on the model. ``--target serve``: ``transformers serve --continuous-batching`` on the same
model (needs ``pip install fastapi``), given the model's transformers directory (for a GGUF
model, its converted copy in the model cache). ``--model`` is one of bench/models.py's models;
the stack is configured with the model's location as a deployment would be (for SmolLM2 the
GGUF file, read through the checkout's model cache, not reconverted). Both get the workload's
chats as streamed /v1/chat/completions at each concurrency: tokens/s, latency and time to first
token. Tokens are the completion tokens each server reports in the stream's ``usage`` (the reply's
tokens, the end-of-turn token included when the model ends early): neither API can ignore EOS.

    python bench/stack_bench.py --model smollm2-135m --json out.json
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
sys.path.insert(0, str(ROOT / "bench"))

from bench.models import DEFAULT, MODELS, model_cache  # noqa: E402
from devtools.processes import Process, free_port, manage, stop_all  # noqa: E402
from devtools.services import PostgresServer, RedisServer  # noqa: E402

NEW_TOKENS = 64


def load_workload(model_dir: Path, count: int) -> list[list[dict]]:
    """The same chats as engine_bench.py (prompts of 17..281 tokens with this tokenizer)."""
    from types import SimpleNamespace

    from engine_bench import make_workload
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    return make_workload(SimpleNamespace(tokenizer=tokenizer), count)


class Stack:
    """Redis, PostgreSQL, web and worker, all throwaway; the worker serves ``model`` from
    ``location`` (a directory or a GGUF file, converted GGUF files in the checkout's cache)."""

    def __init__(
        self,
        model: str,
        location: Path,
        workdir: Path,
        threads: int,
        batch: int,
        settings: dict[str, str] | None = None,
        root: Path = ROOT,
    ):
        self.workdir = workdir
        self.root = root  # the checkout whose web and worker run (bench/run.py --baseline)
        self.redis = RedisServer(workdir / "redis")
        self.postgres = PostgresServer(workdir / "pg")
        self.port = free_port()
        self.env = {
            **os.environ,
            # Production settings, as deployed: DEBUG off (it records every SQL query).
            "SECRET_KEY": "bench-secret-key-not-for-production",
            "AUTOGLM_DATA_DIR": str(workdir / "data"),
            "AUTOGLM_MODELS": f"{model}={location}",
            "AUTOGLM_MODEL_CACHE": str(model_cache()),
            "AUTOGLM_TORCH_THREADS": str(threads),
            "AUTOGLM_MAX_BATCH_SIZE": str(batch),
            "AUTOGLM_LOG_LEVEL": "WARNING",
            "AUTOGLM_MAX_TOKENS_LIMIT": "4096",
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(root),
            **(settings or {}),
        }
        self.processes: list[Process] = []
        self.key = ""

    def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        self.env["REDIS_URL"] = self.redis.url
        os.chmod(self.workdir, 0o755)  # PostgreSQL runs as its own user
        self.postgres.start()
        self.env["DATABASE_URL"] = self.postgres.url
        manage("migrate", "--noinput", env=self.env, root=self.root)
        bootstrap = manage("bootstrap_demo", "--json", env=self.env, root=self.root)
        self.key = json.loads(bootstrap)["api_key"]
        log = self.workdir / "stack.log"
        worker = [sys.executable, "manage.py", "worker"]
        worker += ["--concurrency", self.env["AUTOGLM_MAX_BATCH_SIZE"], "--loglevel", "WARNING"]
        web = [sys.executable, "-m", "uvicorn", "autoglm_site.asgi:application"]
        web += ["--host", "127.0.0.1", "--port", str(self.port), "--lifespan", "on"]
        web += ["--no-access-log", "--log-level", "warning"]
        for command in (worker, web):
            process = Process(command, env=self.env, cwd=self.root, log=log, stop_timeout=30)
            self.processes.append(process.start())
        self.processes[-1].wait_for_port(self.port, 60)
        _wait_until_ready(f"http://127.0.0.1:{self.port}", timeout=300)
        return self

    def stop(self) -> None:
        stop_all(reversed(self.processes))
        self.redis.stop()
        self.postgres.stop()


def _wait_until_ready(base: str, timeout: float) -> None:
    """Until /readyz says the worker has loaded its model (before, chats are refused 503)."""
    deadline = time.monotonic() + timeout
    while httpx.get(f"{base}/readyz", timeout=10).status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the stack was not ready in {timeout}s")
        time.sleep(0.5)


class TransformersServe:
    """``transformers serve --continuous-batching`` on a transformers directory, in ``dtype``
    (None: serve's own default, the checkpoint's dtype)."""

    def __init__(self, model_dir: Path, workdir: Path, threads: int, dtype: str | None = None):
        self.model_dir = model_dir
        self.dtype = dtype
        self.port = free_port()
        self.key = "unused"
        self.workdir = workdir
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
        self.process: Process | None = None

    def start(self) -> TransformersServe:
        command = [str(Path(sys.executable).parent / "transformers"), "serve"]
        command += ["--continuous-batching", "--port", str(self.port), "--host", "127.0.0.1"]
        if self.dtype:
            command += ["--dtype", self.dtype]
        command.append(str(self.model_dir))
        log = self.workdir / "serve.log"
        self.process = Process(command, env=self.env, log=log, stop_timeout=30).start()
        self.process.wait_for_port(self.port, 180)
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()


async def one_chat(
    client: httpx.AsyncClient,
    model: str,
    messages: list[dict],
    temperature: float,
    keep_text: bool = False,
) -> dict:
    """One streamed chat: its latency, time to first token and completion tokens (and, with
    ``keep_text``, the reply's text, for a conversation's next turn)."""
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": NEW_TOKENS,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    for attempt in range(2):
        try:
            first, usage, parts = await _stream(client, body)
            break
        except _Unanswered as error:
            # llama-server now and then closes a kept-alive connection just as the next request
            # goes out on it. Nothing came back, so send it once more (as the OpenAI client
            # retries connection errors).
            if attempt:
                raise error.__cause__ from None
    ended = time.perf_counter()
    if usage is None:  # counting chunks instead would not count tokens (a chunk may hold several)
        raise RuntimeError("the server sent no usage at the end of the stream")
    result = {
        "latency": ended - started,
        "ttft": (first or ended) - started,
        "tokens": usage["completion_tokens"],
    }
    return {**result, "text": "".join(parts)} if keep_text else result


class _Unanswered(Exception):
    """The server closed the connection before it sent any answer."""


async def _stream(client: httpx.AsyncClient, body: dict) -> tuple[float | None, dict | None, list]:
    """One streamed request: when its first text came, its usage, its text's parts."""
    first = None
    usage = None
    parts: list[str] = []
    answered = False
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            answered = True
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(chunk["error"])
                choices = chunk.get("choices")
                content = choices[0]["delta"].get("content") if choices else ""
                if content:
                    first = first or time.perf_counter()
                    parts.append(content)
                if chunk.get("usage"):
                    usage = chunk["usage"]
    except httpx.RemoteProtocolError as error:
        if answered:  # cut off mid-answer: a fault to report, not to hide by sending it again
            raise
        raise _Unanswered from error
    return first, usage, parts


def fresh(workload: list[list[dict]], tag: str) -> list[list[dict]]:
    """The workload's chats, each user message opened by ``tag`` and its index: prompts no
    server has seen, so no prompt or prefix cache can answer them (the chat template's system
    prompt before them is shared, as it is in real traffic)."""
    return [
        [*chat[:-1], {**chat[-1], "content": f"({tag}-{index}) {chat[-1]['content']}"}]
        for index, chat in enumerate(workload)
    ]


async def run_level(
    base_url: str, key: str, model: str, concurrency: int, workload: list, temperature: float
) -> dict:
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=600, limits=limits
    ) as client:
        queue = list(workload)
        results: list[dict] = []

        async def runner():
            while queue:
                results.append(await one_chat(client, model, queue.pop(0), temperature))

        started = time.perf_counter()
        await asyncio.gather(*(runner() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return summarize(results, elapsed)


def summarize(results: list[dict], elapsed: float) -> dict:
    latencies = sorted(r["latency"] for r in results)
    ttfts = sorted(r["ttft"] for r in results)

    def pct(values, q):
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]

    tokens = sum(r["tokens"] for r in results)
    return {
        "requests": len(results),
        "tokens": tokens,
        "seconds": elapsed,
        "tokens_per_s": tokens / elapsed,
        "p50_latency": statistics.median(latencies),
        "p99_latency": pct(latencies, 0.99),
        "p50_ttft": statistics.median(ttfts),
        "p99_ttft": pct(ttfts, 0.99),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=sorted(MODELS), default=DEFAULT)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--target", choices=("stack", "serve"), default="stack")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--dtype", help="transformers serve's dtype (default: its own)")
    args = parser.parse_args()
    bench_model = MODELS[args.model]
    model_dir = bench_model.directory(lambda message: print(message, flush=True))
    workload = load_workload(model_dir, args.requests)
    levels = [int(x) for x in args.levels.split(",")]
    label = "full stack (HTTP)" if args.target == "stack" else "transformers serve --cb"
    results = {}
    with tempfile.TemporaryDirectory(prefix="autoglm-bench-") as tmp:
        if args.target == "stack":
            location = bench_model.location()
            server = Stack(args.model, location, Path(tmp), args.threads, max(levels))
            model = args.model
        else:
            server = TransformersServe(model_dir, Path(tmp), args.threads, args.dtype)
            model = str(model_dir)
        server.start()
        base = f"http://127.0.0.1:{server.port}"
        try:
            asyncio.run(run_level(base, server.key, model, 1, workload[:2], args.temperature))
            for level in levels:
                results[level] = asyncio.run(
                    run_level(base, server.key, model, level, workload, args.temperature)
                )
                print(f"{label} c={level}: {results[level]['tokens_per_s']:.1f} tok/s", flush=True)
        finally:
            server.stop()
    if args.json:
        args.json.write_text(json.dumps({label: results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
