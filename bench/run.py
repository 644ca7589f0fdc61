"""`make bench`: every contender on the same workload, one table and one plot.

Contenders (the ~100M demo model, built first if needed):

- one-at-a-time `generate`, our BatchingEngine in-process (the raw engine), and transformers'
  own continuous batching in-process: each a resident bench/engine_bench.py --serve process;
- the full stack over HTTP (web, Redis, PostgreSQL, Celery, worker; bench/stack_bench.py);
- `transformers serve --continuous-batching` on the same model in the same dtype (its default
  would be the checkpoint's float32, whose greedy replies differ), when its extra packages
  (fastapi, accelerate) are installed.

Workload: 32 chats, prompts 17-281 tokens, 64 new tokens, greedy, concurrency 1 (the first 8
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

Writes bench/results/results.json and bench/results/throughput.png.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import stack_bench  # noqa: E402

from devtools.processes import Process  # noqa: E402

MODEL_DIR = ROOT / ".models" / "demo-100m"
SERIAL_REQUESTS = 8  # chats at concurrency 1: the slow case
# The worker's defaults, given to both the raw engine and the stack's worker.
MAX_BATCH_TOKENS = 8192
MAX_PREFILL_TOKENS = 1024

LABELS = {
    "generate": "one-at-a-time generate",
    "batching": "raw engine (in-process)",
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
        levels: list[int],
        threads: int,
        dtype: str,
        root: Path = ROOT,
        name: str | None = None,
    ) -> None:
        self.name = name or engine  # the contender's row in the results
        script = root / "bench" / "engine_bench.py"
        command = [sys.executable, str(script), "--serve", "--engines", engine]
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
    levels: list[int], threads: int, rounds: int, workdir: Path, baseline: Path | None = None
) -> dict:
    """Per contender and level, the rows of every round."""
    from workers.demo_model import build_demo_model

    build_demo_model(MODEL_DIR, "100m", progress=lambda message: print(message, flush=True))
    dtype = serving_dtype()
    workload = stack_bench.load_workload(MODEL_DIR, 32)
    print(f"(serving dtype on this machine: {dtype}; {threads} threads)", flush=True)
    contenders: list = []
    try:
        for name in ("generate", "batching", "transformers"):
            print(f"==> starting {LABELS[name]}", flush=True)
            contenders.append(EngineContender(name, levels, threads, dtype))
        print(f"==> starting {LABELS['stack']}", flush=True)
        settings = {
            "AUTOGLM_MAX_BATCH_TOKENS": str(MAX_BATCH_TOKENS),
            "AUTOGLM_MAX_PREFILL_TOKENS": str(MAX_PREFILL_TOKENS),
        }
        stack = stack_bench.Stack(MODEL_DIR, workdir, threads, max(levels), settings)
        contenders.append(HttpContender("stack", stack, stack_bench.MODEL, workload))
        if baseline is not None:
            print(f"==> starting the raw engine and the full stack of {baseline}", flush=True)
            contenders.append(
                EngineContender(
                    "batching", levels, threads, dtype, baseline, name="batching" + BASELINE
                )
            )
            stack = stack_bench.Stack(
                MODEL_DIR, workdir / "baseline", threads, max(levels), settings, root=baseline
            )
            contenders.append(HttpContender("stack" + BASELINE, stack, stack_bench.MODEL, workload))
        if importlib.util.find_spec("fastapi") and importlib.util.find_spec("accelerate"):
            print(f"==> starting {LABELS['serve']}", flush=True)
            serve = stack_bench.TransformersServe(MODEL_DIR, workdir, threads, dtype)
            contenders.append(HttpContender("serve", serve, str(MODEL_DIR), workload))
        else:
            print("(transformers serve skipped: pip install fastapi accelerate)")
        rows: dict = {c.name: {level: [] for level in levels} for c in contenders}
        for round_ in range(1, rounds + 1):
            for level in levels:
                for contender in contenders:
                    if contender.name == "generate" and level != 1:
                        continue  # serialised on the model lock: the same at any concurrency
                    row = contender.run(level)
                    rows[contender.name][level].append(row)
                    print(
                        f"round {round_}/{rounds} c={level:<3} {label(contender.name):<30} "
                        f"{row['tokens_per_s']:7.1f} tok/s ({row['tokens']} tokens)",
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


def table(summ: dict, rounds: int) -> str:
    lines = [
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


def plot(summ: dict, path: Path) -> None:
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
    axis.set_xticks([1, 8, 32], labels=["1", "8", "32"])
    axis.set_xlabel("concurrent chats")
    axis.set_ylabel("generated tokens / s (median, range over rounds)")
    axis.set_title("autoglm, ~100M demo model, 64 new tokens")
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=3, help="turns every contender takes")
    parser.add_argument("--from-json", type=Path, help="re-render a saved results.json")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. a git worktree of an older commit): its raw engine and "
        "full stack run in the same rounds, and the table gives the ratios to them",
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        rows = {n: {int(c): runs for c, runs in by.items()} for n, by in saved["rows"].items()}
    else:
        levels = [int(level) for level in args.levels.split(",")]
        with tempfile.TemporaryDirectory(prefix="autoglm-bench-") as tmp:
            baseline = args.baseline.resolve() if args.baseline else None
            if baseline == ROOT:
                parser.error("--baseline must be another checkout than this one")
            rows = collect(levels, args.threads, args.rounds, Path(tmp), baseline)
        (RESULTS / "results.json").write_text(json.dumps({"rows": rows}, indent=2))
    rounds = max(len(runs) for by in rows.values() for runs in by.values())
    summ = summary(rows)
    print()
    print(table(summ, rounds))
    plot(summ, RESULTS / "throughput.png")
    print(f"\nplot: {RESULTS / 'throughput.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
