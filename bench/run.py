"""`make bench`: every contender on the same workload, one table and one plot.

Runs each contender in its own process, one at a time, so they do not compete for the cores
(the engine benchmark builds the ~100M demo model first if needed):

- bench/engine_bench.py: one-at-a-time `generate`, our BatchingEngine in-process (the raw
  engine), and transformers' own continuous batching in-process;
- bench/stack_bench.py --target stack: the full stack over HTTP (web, Redis, Celery, worker);
- bench/stack_bench.py --target serve: `transformers serve --continuous-batching` on the same
  model and load, when its extra packages (fastapi, accelerate) are installed.

Workload: 32 chats, prompts 17-281 tokens, 64 new tokens, greedy, concurrency 1, 8 and 32.
Writes bench/results/results.json and bench/results/throughput.png.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"

LABELS = {
    "generate": "one-at-a-time generate",
    "batching": "raw engine (in-process)",
    "transformers": "transformers CB (in-process)",
    "stack": "full stack over HTTP",
    "serve": "transformers serve --cb",
}


def run(args: list[str]) -> None:
    print("==>", " ".join(args), flush=True)
    subprocess.run(
        [sys.executable, *args], cwd=ROOT, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )


def serving_dtype() -> str:
    """The dtype a worker picks on this machine (AUTOGLM_DTYPE, else auto), so that the raw
    engine is measured as the stack runs it."""
    sys.path.insert(0, str(ROOT))
    from workers.registry import select_device_and_dtype

    return str(select_device_and_dtype()[1]).removeprefix("torch.")


def collect(levels: str, threads: int, quick: bool) -> dict[str, dict[int, dict]]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[int, dict]] = {}
    engine_json = RESULTS / "engine.json"
    dtype = serving_dtype()
    print(f"(serving dtype on this machine: {dtype})")
    run(
        [
            str(BENCH / "engine_bench.py"),
            "--concurrency",
            levels,
            "--threads",
            str(threads),
            "--dtype",
            dtype,
            "--json",
            str(engine_json),
            *(["--quick"] if quick else []),
        ]
    )
    for row in json.loads(engine_json.read_text()):
        rows.setdefault(row["engine"], {})[row["concurrency"]] = {
            "tokens_per_s": row["tokens_per_s"],
            "p50_latency": row["latency_p50_s"],
            "p99_latency": row["latency_p99_s"],
            "p50_ttft": row["ttft_p50_s"],
        }
    targets = ["stack"]
    if importlib.util.find_spec("fastapi") and importlib.util.find_spec("accelerate"):
        targets.append("serve")
    else:
        print("(transformers serve skipped: pip install fastapi accelerate)")
    requests = "8" if quick else "32"
    for target in targets:
        out = RESULTS / f"{target}.json"
        run(
            [
                str(BENCH / "stack_bench.py"),
                "--target",
                target,
                "--levels",
                levels,
                "--threads",
                str(threads),
                "--requests",
                requests,
                "--json",
                str(out),
            ]
        )
        for level, row in next(iter(json.loads(out.read_text()).values())).items():
            rows.setdefault(target, {})[int(level)] = row
    return rows


def table(rows: dict[str, dict[int, dict]]) -> str:
    lines = [
        f"{'contender':<30} {'conc':>4} {'tok/s':>8} {'p50 lat':>8} {'p99 lat':>8} "
        f"{'p50 TTFT':>8} {'vs serve':>8} {'vs engine':>9}"
    ]
    for name, by_level in rows.items():
        for level, row in sorted(by_level.items()):
            serve = rows.get("serve", {}).get(level, {}).get("tokens_per_s")
            engine = rows.get("batching", {}).get(level, {}).get("tokens_per_s")
            ratio_serve = f"{row['tokens_per_s'] / serve:.2f}x" if serve else "-"
            ratio_engine = f"{row['tokens_per_s'] / engine:.2f}x" if engine else "-"
            lines.append(
                f"{LABELS.get(name, name):<30} {level:>4} {row['tokens_per_s']:>8.1f} "
                f"{row['p50_latency']:>7.2f}s {row['p99_latency']:>7.2f}s "
                f"{row['p50_ttft']:>7.2f}s {ratio_serve:>8} {ratio_engine:>9}"
            )
    return "\n".join(lines)


def plot(rows: dict[str, dict[int, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, by_level in rows.items():
        levels = sorted(by_level)
        axis.plot(
            levels,
            [by_level[c]["tokens_per_s"] for c in levels],
            marker="o",
            label=LABELS.get(name, name),
        )
    axis.set_xscale("log", base=2)
    axis.set_xticks([1, 8, 32], labels=["1", "8", "32"])
    axis.set_xlabel("concurrent chats")
    axis.set_ylabel("generated tokens / s")
    axis.set_title("autoglm, ~100M demo model, 64 new tokens")
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--quick", action="store_true", help="fewer chats, for a smoke run")
    parser.add_argument("--from-json", type=Path, help="re-render a saved results.json")
    args = parser.parse_args()
    if args.from_json:
        rows = {
            k: {int(c): v for c, v in d.items()}
            for k, d in json.loads(args.from_json.read_text()).items()
        }
    else:
        rows = collect(args.levels, args.threads, args.quick)
        (RESULTS / "results.json").write_text(json.dumps(rows, indent=2))
    print()
    print(table(rows))
    plot(rows, RESULTS / "throughput.png")
    print(f"\nplot: {RESULTS / 'throughput.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
