"""How close the engine's decode step comes to torch's matmul peak on this machine.

For a model and batch sizes (default 1 and 32) it measures, in one run:

- the *GEMM peak*: torch's best FLOP/s over the decode step's own matmul shapes
  (``[batch, in] @ [in, out]`` for every distinct linear layer, the vocabulary head included) and
  a large square GEMM, in the model's dtype with the engine's threads;
- the *GEMM floor* of a step: one pass of ``batch`` rows through every linear layer's own
  weights, in order (what a step would cost with nothing but its matmuls);
- the engine's *decode step*: the mean time of a BatchingEngine decode forward with exactly
  ``batch`` jobs decoding (end-of-turn suppressed through ``logit_bias`` so every job runs its
  whole ``max_tokens``), and the FLOP/s that gives (2 x linear weights x batch, attention
  ignored: at these lengths it is a few per cent).

It prints one line per batch size: step ms, GEMM floor ms, step GFLOP/s, peak GFLOP/s, the
step's share of the peak (the issue's target: >= 60% at batch 32) and of the floor's speed.

    .venv/bin/python bench/roofline.py --model smollm2-135m
    .venv/bin/python bench/roofline.py --model smollm2-135m --batches 1,8,32 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.models import DEFAULT, MODELS, model_cache  # noqa: E402
from engine.engine import BatchingEngine  # noqa: E402
from engine.registry import LoadedModel, load_model  # noqa: E402
from engine.request import EngineRequest  # noqa: E402


def linear_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    """The weight of every linear layer a decode step runs, in order, the vocabulary head
    included."""
    return [module.weight for module in model.modules() if isinstance(module, torch.nn.Linear)]


def gemm_floor_seconds(batch: int, weights: list[torch.Tensor]) -> float:
    """One pass of ``batch`` rows through every linear layer's own weight, in the model's order:
    what a step would cost with nothing but its matmuls (the weights stream from memory as in
    a real step, where they do not fit the caches)."""
    inputs = {w.shape[1]: torch.randn(batch, w.shape[1], dtype=w.dtype) for w in weights}
    with torch.inference_mode():
        return time_call(
            lambda: [torch.nn.functional.linear(inputs[w.shape[1]], w) for w in weights]
        )


def time_call(fn, *, warmup: int = 3, min_time: float = 0.2) -> float:
    """Median seconds of one call of ``fn``."""
    for _ in range(warmup):
        fn()
    samples = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(samples) < 5:
        began = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def gemm_seconds(batch: int, shape: tuple[int, int], dtype: torch.dtype) -> float:
    inputs, outputs = shape
    x = torch.randn(batch, inputs, dtype=dtype)
    weight = torch.randn(outputs, inputs, dtype=dtype)
    with torch.inference_mode():
        return time_call(lambda: torch.nn.functional.linear(x, weight))


def gemm_peak(batches: list[int], shapes: list[tuple[int, int]], dtype: torch.dtype) -> float:
    """The best FLOP/s torch reaches over the step's shapes and one large square GEMM."""
    best = 0.0
    for batch in batches:
        for shape in set(shapes):
            best = max(best, 2 * batch * shape[0] * shape[1] / gemm_seconds(batch, shape, dtype))
    size = 1024
    best = max(best, 2 * size**3 / gemm_seconds(size, (size, size), dtype))
    return best


def decode_step_seconds(loaded: LoadedModel, batch: int, prompt_ids: list[int], tokens: int):
    """Mean seconds of the engine's decode forwards while exactly ``batch`` jobs decode."""
    engine = BatchingEngine(loaded, max_batch_size=batch, max_batch_tokens=8192)
    eos = loaded.tokenizer.eos_token_id
    bias = {eos: -100.0} if eos is not None else None
    runner = engine._runner
    real_decode = runner.decode
    samples: list[float] = []

    def timed_decode(seqs):
        began = time.perf_counter()
        tokens_out = real_decode(seqs)
        if len(seqs) == batch:
            samples.append(time.perf_counter() - began)
        return tokens_out

    runner.decode = timed_decode
    with engine:
        handles = [
            engine.submit(
                EngineRequest(
                    prompt_ids=prompt_ids, max_tokens=tokens, temperature=0, logit_bias=bias
                )
            )
            for _ in range(batch)
        ]
        for handle in handles:
            handle.result(timeout=600)
    steady = samples[len(samples) // 4 :]  # past the first steps' allocations
    return statistics.mean(steady)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT, choices=sorted(MODELS))
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--tokens", type=int, default=48, help="tokens each job decodes")
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 2))
    parser.add_argument("--dtype", default=None, help="default: what a worker picks here")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench_model = MODELS[args.model]
    bench_model.directory(print)
    loaded = load_model(
        bench_model.name,
        bench_model.location(),
        dtype=args.dtype,
        cache_dir=model_cache(),
        torch_threads=args.threads,
    )
    batches = [int(b) for b in args.batches.split(",")]
    linears = linear_weights(loaded.model)
    shapes = [(w.shape[1], w.shape[0]) for w in linears]
    weights = sum(w.numel() for w in linears)
    peak = gemm_peak(batches, shapes, loaded.dtype)
    prompt_ids = loaded.tokenizer.encode("Tell me about the sea. " * 8)
    rows = []
    for batch in batches:
        floor = gemm_floor_seconds(batch, linears)
        step = decode_step_seconds(loaded, batch, prompt_ids, args.tokens)
        flops = 2 * weights * batch
        rows.append(
            {
                "batch": batch,
                "step_ms": step * 1e3,
                "gemm_floor_ms": floor * 1e3,
                "step_gflops": flops / step / 1e9,
                "peak_gflops": peak / 1e9,
                "share_of_peak": flops / step / peak,
                "share_of_floor": floor / step,
            }
        )
    print(f"\nroofline: {bench_model.title}, {loaded.dtype}, {args.threads} threads")
    print(
        "| batch | step ms | GEMM floor ms | step GFLOP/s | peak GFLOP/s | share of peak "
        "| share of floor |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['batch']} | {row['step_ms']:.1f} | {row['gemm_floor_ms']:.1f} "
            f"| {row['step_gflops']:.1f} | {row['peak_gflops']:.1f} "
            f"| {row['share_of_peak']:.0%} | {row['share_of_floor']:.0%} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
