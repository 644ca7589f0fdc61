"""bench/report.py: the benchmark's ratios are taken within a round and of the same kind of row
(fresh prompts against fresh prompts), and the multi-turn ratios against the stack without its
prefix cache."""

import pytest

from bench.report import FRESH, multiturn_summary, summary, table


def run(tokens_per_s: float) -> dict:
    return {
        "tokens": 100,
        "tokens_per_s": tokens_per_s,
        "p50_latency": 1.0,
        "p99_latency": 2.0,
        "p50_ttft": 0.5,
    }


def test_ratios_compare_rows_of_one_kind_within_a_round():
    rows = {
        "stack": {32: [run(60), run(90)]},
        "stack" + FRESH: {32: [run(40), run(50)]},
        "llama-f32": {32: [run(120), run(90)]},
        "llama-f32" + FRESH: {32: [run(80), run(50)]},
        "serve": {32: [run(15), run(30)]},
    }
    summ = summary(rows)
    # Within-round ratios 0.5 and 1.0: their median, not the ratio of the medians (75/105).
    assert summ["stack"][32]["vs_llama"] == pytest.approx(0.75)
    assert summ["stack" + FRESH][32]["vs_llama"] == pytest.approx((0.5 + 1.0) / 2)
    assert summ["stack"][32]["vs_serve"] == pytest.approx(3.5)
    assert "vs_serve" not in summ["stack" + FRESH][32]  # serve has no fresh rows
    assert "vs_llama" not in summ["llama-f32"][32]  # not against itself
    assert summ["stack"][32]["range"] == (60, 90)
    text = table(summ, 2, "smollm2-135m")
    assert "full stack over HTTP, fresh" in text and "0.75x" in text


def test_multiturn_ratios_are_against_the_stack_without_its_cache():
    def conversations(tokens_per_s: float, later: float) -> dict:
        return {
            "tokens": 600,
            "tokens_per_s": tokens_per_s,
            "p50_ttft_first": 1.0,
            "p50_ttft_later": later,
        }

    multi = {
        "stack": [conversations(60, 0.5), conversations(80, 0.2)],
        "stack-nocache": [conversations(40, 2.0), conversations(40, 2.0)],
    }
    summ = multiturn_summary(multi)
    assert summ["stack"]["ttft_cut"] == pytest.approx((4 + 10) / 2)
    assert summ["stack"]["speedup"] == pytest.approx((1.5 + 2.0) / 2)
    assert "ttft_cut" not in summ["stack-nocache"]
