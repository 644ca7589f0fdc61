"""Throughput and latency of the generation paths on one of the benchmark's models.

Standalone (no Django): ``--model`` names one of bench/models.py's models (the
~100M demo model, built into .models/demo-100m if it is missing, or
SmolLM2-135M-Instruct from its GGUF file, converted once into the model cache),
makes a fixed workload of 32 chats whose chat-formatted prompts are 17..281
tokens long (31..281 with SmolLM2's chat template), and runs it through

- ``generate``: one request at a time (bench.baselines.generate; callers serialise
  on the model's lock, so its throughput does not depend on concurrency),
- ``batching``: engine.engine.BatchingEngine (our continuous batching),
- ``batching+grammar``: the same, with every 4th request held to a JSON object by
  its grammar (structured outputs): what a constrained job costs its batch,
- ``transformers``: bench.baselines.TransformersEngine (transformers' own
  continuous batching, ContinuousBatchingManager),

at concurrency 1, 8 and 32 (closed loop: N client threads, each submitting its
next chat as soon as the previous one is answered). Reports completion tokens
per second of wall time, p50/p99 request latency and time to first token, as
a table and optionally as JSON. Completion tokens are the tokens each reply
actually has (GenerationResult.completion_tokens: up to --max-tokens, the
end-of-turn token included when the model ends its reply earlier), as the
servers report them in ``usage`` (bench/stack_bench.py).

    .venv/bin/python bench/engine_bench.py                 # full run, float32
    .venv/bin/python bench/engine_bench.py --model smollm2-135m
    .venv/bin/python bench/engine_bench.py --quick         # smaller, ~1 minute
    .venv/bin/python bench/engine_bench.py --dtype bfloat16 --json out.json

The machine's load average is printed with every row: other processes
competing for the cores skew CPU numbers badly (especially with 2 threads);
``--repeat N`` keeps the fastest of N runs per row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.baselines import TransformersEngine, generate  # noqa: E402
from bench.models import DEFAULT, MODELS, model_cache  # noqa: E402
from engine.engine import BatchingEngine  # noqa: E402
from engine.registry import LoadedModel, load_model  # noqa: E402
from engine.request import EngineRequest  # noqa: E402
from workers.demo_model import gather_corpus  # noqa: E402
from workers.prompts import encode_prompt  # noqa: E402


@dataclass
class Row:
    engine: str
    dtype: str
    concurrency: int
    requests: int
    completion_tokens: int
    wall_s: float
    tokens_per_s: float
    latency_p50_s: float
    latency_p99_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    loadavg_1m: float


def make_workload(loaded: LoadedModel, count: int = 32) -> list[list[dict]]:
    """``count`` single-turn chats whose prompts span 17..281 tokens, evenly.

    A chat template longer than 17 tokens on its own raises the floor to its one-word prompt
    (SmolLM2's adds a default system prompt: 31..281 tokens). Only ``loaded.tokenizer`` is
    used (bench/stack_bench.py passes a stand-in holding just the tokenizer). Deterministic:
    the text is stdlib docstrings.
    """
    text = " ".join(gather_corpus()[1:])
    words = text.split()
    low = max(17, len(encode_prompt(loaded, [{"role": "user", "content": words[0]}])))
    targets = [round(low + (281 - low) * i / max(1, count - 1)) for i in range(count)]
    chats = []
    for index, target in enumerate(targets):
        start = (index * 997) % (len(words) - 2000)
        lo, hi = 1, 600
        best = None
        while lo <= hi:  # most words whose prompt still fits the target
            mid = (lo + hi) // 2
            chat = [{"role": "user", "content": " ".join(words[start : start + mid])}]
            if len(encode_prompt(loaded, chat)) <= target:
                best, lo = chat, mid + 1
            else:
                hi = mid - 1
        assert best is not None, f"no prompt fits {target} tokens"
        chats.append(best)
    return chats


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def run_closed_loop(
    chats: list[list[dict]],
    concurrency: int,
    one: Callable[[list[dict]], tuple[int, float, float]],
) -> tuple[float, list[tuple[int, float, float]]]:
    """Run ``one(chat) -> (completion_tokens, latency, ttft)`` from N client threads."""
    lock = threading.Lock()
    pending = list(reversed(chats))
    results: list[tuple[int, float, float]] = []
    errors: list[BaseException] = []

    def client() -> None:
        while True:
            with lock:
                if not pending or errors:
                    return
                chat = pending.pop()
            try:
                outcome = one(chat)
            except BaseException as exc:  # reported below
                with lock:
                    errors.append(exc)
                return
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    return wall, results


def summarise(name: str, dtype: str, concurrency: int, wall: float, results) -> Row:
    tokens = sum(r[0] for r in results)
    latencies = [r[1] for r in results]
    ttfts = [r[2] for r in results]
    return Row(
        engine=name,
        dtype=dtype,
        concurrency=concurrency,
        requests=len(results),
        completion_tokens=tokens,
        wall_s=round(wall, 2),
        tokens_per_s=round(tokens / wall, 1),
        latency_p50_s=round(percentile(latencies, 50), 3),
        latency_p99_s=round(percentile(latencies, 99), 3),
        ttft_p50_s=round(percentile(ttfts, 50), 3),
        ttft_p99_s=round(percentile(ttfts, 99), 3),
        loadavg_1m=round(os.getloadavg()[0], 2),
    )


def bench_generate(loaded, chats, concurrency, max_tokens, temperature) -> tuple[float, list]:
    def one(chat):
        started = time.perf_counter()
        first: list[float] = []

        def on_text(_delta: str) -> None:
            if not first:
                first.append(time.perf_counter() - started)

        result = generate(
            loaded,
            chat,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=0,
            on_text=on_text,
        )
        latency = time.perf_counter() - started
        return result.completion_tokens, latency, first[0] if first else latency

    return run_closed_loop(chats, concurrency, one)


# "batching+grammar": every GRAMMAR_EVERY-th request is held to a JSON object by its grammar
# (structured outputs), the rest are free: the throughput beside plain "batching" is what a
# constrained job costs the batch.
GRAMMAR_EVERY = 4


def json_object_grammar() -> str:
    from chat.grammars import response_format_grammar

    return response_format_grammar({"type": "json_object"})


def bench_engine(
    engine, loaded, chats, concurrency, max_tokens, temperature, seeded, grammar_every=0
):
    grammar = json_object_grammar() if grammar_every else None
    index = {id(chat): i for i, chat in enumerate(chats)}

    def one(chat):
        constrained = grammar_every and index[id(chat)] % grammar_every == 0
        handle = engine.submit(
            EngineRequest(
                prompt_ids=encode_prompt(loaded, chat),
                max_tokens=max_tokens,
                temperature=temperature,
                seed=0 if seeded and temperature > 0 else None,
                grammar=grammar if constrained else None,
            )
        )
        result = handle.result()
        latency = handle.finished_at - handle.submitted_at
        ttft = (handle.first_token_at or handle.finished_at) - handle.submitted_at
        return result.completion_tokens, latency, ttft

    return run_closed_loop(chats, concurrency, one)


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'engine':<13}{'dtype':<10}{'conc':>5}{'reqs':>5}{'tokens':>7}{'wall s':>8}"
        f"{'tok/s':>8}{'lat p50':>9}{'lat p99':>9}{'ttft p50':>9}{'ttft p99':>9}{'load':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.engine:<13}{r.dtype:<10}{r.concurrency:>5}{r.requests:>5}"
            f"{r.completion_tokens:>7}{r.wall_s:>8.2f}{r.tokens_per_s:>8.1f}"
            f"{r.latency_p50_s:>9.3f}{r.latency_p99_s:>9.3f}{r.ttft_p50_s:>9.3f}"
            f"{r.ttft_p99_s:>9.3f}{r.loadavg_1m:>6.2f}"
        )
    sys.stdout.flush()


def make_engine(name: str, loaded, args, max_batch: int, cache_tokens: int):
    """The engine a contender runs on (None for one-at-a-time ``generate``), started."""
    if name == "generate":
        return None
    if name in ("batching", "batching+grammar"):
        engine = BatchingEngine(
            loaded,
            max_batch_size=max_batch,
            max_batch_tokens=args.max_batch_tokens,
            max_prefill_tokens=args.max_prefill_tokens,
        )
    elif name == "transformers":
        engine = TransformersEngine(
            loaded,
            max_batch_size=max_batch,
            max_batch_tokens=args.max_prefill_tokens,
            cache_tokens=cache_tokens,
            do_sample=args.temperature > 0,
        )
    else:
        raise ValueError(f"unknown engine {name!r}")
    if name == "batching+grammar":
        from engine.grammar import grammar_tokenizer

        grammar_tokenizer(loaded)  # built once per model (~0.5 s), as by a worker's first one
    engine.start()
    return engine


def run_level(name, engine, loaded, chats, concurrency, max_tokens, temperature):
    if name == "generate":
        return bench_generate(loaded, chats, concurrency, max_tokens, temperature)
    grammar_every = GRAMMAR_EVERY if name == "batching+grammar" else 0
    return bench_engine(
        engine,
        loaded,
        chats,
        concurrency,
        max_tokens,
        temperature,
        seeded=name.startswith("batching"),
        grammar_every=grammar_every,
    )


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default=DEFAULT)
    parser.add_argument("--quick", action="store_true", help="8 chats, 32 new tokens")
    parser.add_argument(
        "--dtype", default="float32", help="float32, bfloat16, or both (comma-separated)"
    )
    parser.add_argument("--engines", default="generate,batching,batching+grammar,transformers")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--max-tokens", type=int, default=None, help="default 64 (quick: 32)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--serial-requests",
        type=int,
        default=None,
        help="chats used at concurrency 1 (default 8; quick: 4): it is the slow case",
    )
    # The worker's defaults (AUTOGLM_MAX_BATCH_TOKENS, AUTOGLM_MAX_PREFILL_TOKENS).
    parser.add_argument("--max-batch-tokens", type=int, default=8192)
    parser.add_argument("--max-prefill-tokens", type=int, default=1024)
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per row, the fastest is kept (default 1)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="keep one engine (the first of --engines) resident and run the concurrency "
        "levels read from stdin, one JSON row per line on stdout (bench/run.py drives this)",
    )
    args = parser.parse_args(argv)
    args.count = 8 if args.quick else 32
    args.max_tokens = args.max_tokens or (32 if args.quick else 64)
    args.serial = args.serial_requests or (4 if args.quick else 8)
    return args


def prepare(args, dtype: str, progress=lambda message: None):
    """Load the model in ``dtype`` with the benchmark's threads (from its location, as a worker
    does: a GGUF file through the model cache); the workload; a warm-up."""
    model = MODELS[args.model]
    model.directory(progress)  # the demo model is built, a GGUF file converted, once
    loaded = load_model(
        model.name,
        model.location(),
        device=os.environ.get("AUTOGLM_DEVICE"),
        dtype=dtype,
        cache_dir=model_cache(),
    )
    torch.set_num_threads(args.threads)
    chats = make_workload(loaded, args.count)
    # Warm up kernels and allocator on the longest prompt once.
    generate(loaded, chats[-1], max_tokens=4, temperature=0)
    return loaded, chats


def serve(args) -> int:
    """One resident contender: a concurrency level per stdin line, a JSON row per stdout line."""
    name = args.engines.split(",")[0]
    dtype = args.dtype.split(",")[0]
    loaded, chats = prepare(args, dtype)
    max_batch = max(int(c) for c in args.concurrency.split(","))
    lengths = [len(encode_prompt(loaded, chat)) for chat in chats]
    cache_tokens = max_batch * (max(lengths) + args.max_tokens + 64)
    engine = make_engine(name, loaded, args, max_batch, cache_tokens)
    try:
        if engine is not None:  # warm-up
            bench_engine(engine, loaded, chats[:4], 4, 4, args.temperature, True)
        print("ready", flush=True)
        for line in sys.stdin:
            concurrency = int(line)
            subset = chats[: args.serial] if concurrency == 1 else chats
            wall, results = run_level(
                name, engine, loaded, subset, concurrency, args.max_tokens, args.temperature
            )
            row = summarise(name, dtype, concurrency, wall, results)
            print(json.dumps(asdict(row)), flush=True)
    finally:
        if engine is not None:
            engine.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        return serve(args)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    engines = args.engines.split(",")
    dtypes = ["float32", "bfloat16"] if args.dtype == "both" else args.dtype.split(",")

    rows: list[Row] = []
    for dtype in dtypes:
        loaded, chats = prepare(args, dtype, lambda message: print(message, flush=True))
        lengths = [len(encode_prompt(loaded, chat)) for chat in chats]
        print(
            f"\n{args.model}, {dtype}: {len(chats)} chats, "
            f"prompts {min(lengths)}..{max(lengths)} tokens "
            f"(mean {statistics.mean(lengths):.0f}), {args.max_tokens} new tokens, "
            f"temperature {args.temperature}, {torch.get_num_threads()} threads",
            flush=True,
        )
        max_batch = max(concurrencies)
        cache_tokens = max_batch * (max(lengths) + args.max_tokens + 64)
        for name in engines:
            engine = make_engine(name, loaded, args, max_batch, cache_tokens)
            try:
                if engine is not None:  # warm-up
                    bench_engine(engine, loaded, chats[:4], 4, 4, args.temperature, True)
                for concurrency in concurrencies:
                    subset = chats[: args.serial] if concurrency == 1 else chats
                    if name == "generate" and concurrency != 1:
                        continue  # serialised on the model lock: same throughput
                    best: Row | None = None
                    for _ in range(args.repeat):  # keep the best: load from others only slows
                        wall, results = run_level(
                            name,
                            engine,
                            loaded,
                            subset,
                            concurrency,
                            args.max_tokens,
                            args.temperature,
                        )
                        row = summarise(name, dtype, concurrency, wall, results)
                        if best is None or row.tokens_per_s > best.tokens_per_s:
                            best = row
                    assert best is not None
                    rows.append(best)
                    print_table(rows[-1:])
            finally:
                if engine is not None:
                    engine.stop()
        del loaded

    print()
    print_table(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
