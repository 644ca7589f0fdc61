"""bench/run.py's results as one table and one plot per model.

Rows are named by contender; a contender's fresh-prompt rows carry FRESH after its name. Ratios
are medians of within-round ratios, each against the same kind of row (fresh against fresh).
"""

from __future__ import annotations

import statistics
from pathlib import Path

BASELINE = "@baseline"  # suffix of the contenders that run from the --baseline checkout
FRESH = "@fresh"  # suffix of a contender's rows measured with prompts no server has seen

LABELS = {
    "generate": "one-at-a-time generate",
    "batching": "raw engine (in-process)",
    "batching+grammar": "raw engine, 1 in 4 JSON-bound",
    "transformers": "transformers CB (in-process)",
    "stack": "full stack over HTTP",
    "stack-nocache": "full stack, no prefix cache",
    "serve": "transformers serve --cb",
    "llama-f32": "llama-server, F32 GGUF",
    "llama-q4_1": "llama-server, Q4_1 GGUF",
}
# (column, the row a row is compared with): the peers' rows of the same kind
RATIOS = (("serve", "serve"), ("llama", "llama-f32"), ("batching", "batching"))


def label(name: str) -> str:
    base = name.removesuffix(FRESH).removesuffix(BASELINE)
    text = LABELS.get(base, base)
    if name.removesuffix(FRESH).endswith(BASELINE):
        text += " [baseline]"
    return text + (", fresh" if name.endswith(FRESH) else "")


def _ratio(speeds: list[float], others: list[dict]) -> float | None:
    if not others or len(others) != len(speeds):
        return None
    return statistics.median(a / b["tokens_per_s"] for a, b in zip(speeds, others, strict=True))


def summary(rows: dict) -> dict:
    """Medians over rounds, the tok/s range, and the median within-round ratios."""
    result: dict = {}
    for name, by_level in rows.items():
        kind = FRESH if name.endswith(FRESH) else ""
        for level, runs in by_level.items():
            speeds = [run["tokens_per_s"] for run in runs]
            entry = {
                key: statistics.median(run[key] for run in runs)
                for key in ("tokens_per_s", "p50_latency", "p99_latency", "p50_ttft")
            }
            entry["range"] = (min(speeds), max(speeds))
            if all("tokens" in run for run in runs):  # results.json files before they had it
                entry["tokens"] = statistics.median(run["tokens"] for run in runs)
            bases = [(key, base + kind) for key, base in RATIOS]
            bases.append(("baseline", name.removesuffix(FRESH) + BASELINE + kind))
            for key, base in bases:
                ratio = _ratio(speeds, rows.get(base, {}).get(level, []))
                if ratio is not None and base != name:
                    entry[f"vs_{key}"] = ratio
            result.setdefault(name, {})[level] = entry
    return result


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(summ: dict, rounds: int, title: str) -> str:
    lines = [
        f"== {title} ==",
        f"medians of {rounds} round(s); tokens: completion tokens generated at that level; "
        "tok/s range over the rounds; ratios: median of within-round ratios, fresh rows "
        "against fresh rows",
        f"{'contender':<36} {'conc':>4} {'tokens':>6} {'tok/s':>7} {'range':>11} "
        f"{'p50 lat':>8} {'p99 lat':>8} {'p50 TTFT':>8} {'vs serve':>8} {'vs llama':>8} "
        f"{'vs engine':>9} {'vs base':>8}",
    ]
    for name, by_level in summ.items():
        for level, row in sorted(by_level.items()):
            low, high = row["range"]
            tokens = f"{row['tokens']:.0f}" if "tokens" in row else "-"
            lines.append(
                f"{label(name):<36} {level:>4} {tokens:>6} {row['tokens_per_s']:>7.1f} "
                f"{f'{low:.0f}-{high:.0f}':>11} {row['p50_latency']:>7.2f}s "
                f"{row['p99_latency']:>7.2f}s {row['p50_ttft']:>7.2f}s "
                f"{_times(row.get('vs_serve')):>8} {_times(row.get('vs_llama')):>8} "
                f"{_times(row.get('vs_batching')):>9} {_times(row.get('vs_baseline')):>8}"
            )
    return "\n".join(lines)


def multiturn_summary(multi: dict) -> dict:
    """Per contender: medians over rounds, and the ratios to the stack without its cache."""
    result = {}
    plain = multi.get("stack-nocache", [])
    for name, runs in multi.items():
        entry = {
            key: statistics.median(run[key] for run in runs)
            for key in ("tokens", "tokens_per_s", "p50_ttft_first", "p50_ttft_later")
        }
        if plain and len(plain) == len(runs) and name != "stack-nocache":
            pairs = list(zip(runs, plain, strict=True))
            entry["ttft_cut"] = statistics.median(
                b["p50_ttft_later"] / a["p50_ttft_later"] for a, b in pairs
            )
            entry["speedup"] = statistics.median(
                a["tokens_per_s"] / b["tokens_per_s"] for a, b in pairs
            )
        result[name] = entry
    return result


def multiturn_table(summ: dict, conversations: int, turns: int) -> str:
    lines = [
        f"== multi-turn: {conversations} conversations x {turns} turns, all at once ==",
        "p50 TTFT of turn 1 and of turns >= 2; ratios against the full stack without its "
        "prefix cache (TTFT cut: how many times shorter; tok/s: how many times more)",
        f"{'contender':<36} {'tokens':>6} {'tok/s':>7} {'TTFT t1':>8} {'TTFT t2+':>9} "
        f"{'TTFT cut':>8} {'tok/s x':>8}",
    ]
    for name, row in summ.items():
        lines.append(
            f"{label(name):<36} {row['tokens']:>6.0f} {row['tokens_per_s']:>7.1f} "
            f"{row['p50_ttft_first']:>7.2f}s {row['p50_ttft_later']:>8.2f}s "
            f"{_times(row.get('ttft_cut')):>8} {_times(row.get('speedup')):>8}"
        )
    return "\n".join(lines)


def roofline_line(rows: list[dict]) -> str:
    return "roofline (bench/roofline.py, same run): " + "; ".join(
        f"batch {row['batch']}: step {row['step_ms']:.1f} ms, GEMM floor "
        f"{row['gemm_floor_ms']:.1f} ms, {row['step_gflops']:.0f} of {row['peak_gflops']:.0f} "
        f"GFLOP/s peak = {row['share_of_peak']:.0%}"
        for row in rows
    )


def plot(summ: dict, multi: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 2 if multi else 1
    figure, axes = plt.subplots(1, columns, figsize=(7 * columns, 5), squeeze=False)
    axis = axes[0][0]
    for name, by_level in summ.items():
        levels = sorted(by_level)
        medians = [by_level[c]["tokens_per_s"] for c in levels]
        errors = [
            [m - by_level[c]["range"][0] for c, m in zip(levels, medians, strict=True)],
            [by_level[c]["range"][1] - m for c, m in zip(levels, medians, strict=True)],
        ]
        style = "--" if name.endswith(FRESH) else "-"
        axis.errorbar(
            levels, medians, yerr=errors, marker="o", capsize=3, linestyle=style, label=label(name)
        )
    axis.set_xscale("log", base=2)
    ticks = sorted({level for by_level in summ.values() for level in by_level})
    axis.set_xticks(ticks, labels=[str(level) for level in ticks])
    axis.set_xlabel("concurrent chats")
    axis.set_ylabel("generated tokens / s (median, range over rounds)")
    axis.set_title(f"{title}\nat most 64 new tokens, greedy (dashed: fresh prompts)")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7)
    if multi:
        axis = axes[0][1]
        names = list(multi)
        positions = range(len(names))
        axis.bar([p - 0.2 for p in positions], [multi[n]["p50_ttft_first"] for n in names], 0.4)
        axis.bar([p + 0.2 for p in positions], [multi[n]["p50_ttft_later"] for n in names], 0.4)
        axis.set_xticks(list(positions), labels=[label(n) for n in names], fontsize=7)
        axis.legend(["turn 1", "turns >= 2"])
        axis.set_ylabel("p50 time to first token (s)")
        axis.set_title("multi-turn conversations")
        axis.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
