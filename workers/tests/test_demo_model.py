"""The offline demo model must look and load exactly like a hub checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from workers.demo_model import BUILD_VERSION, MARKER_FILE, SIZES, build_demo_model

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there!"},
]


def _ids(encoded: object) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True).
    if hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return list(encoded)


def test_it_builds_offline_and_loads_through_from_pretrained(tiny_model_path: Path) -> None:
    assert (tiny_model_path / "model.safetensors").is_file()
    assert json.loads((tiny_model_path / MARKER_FILE).read_text()) == {
        "size": "tiny",
        "seed": 0,
        "version": BUILD_VERSION,
    }

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, local_files_only=True)

    spec = SIZES["tiny"]
    assert model.config.model_type == "llama"
    assert model.config.hidden_size == spec.hidden_size
    assert model.config.num_hidden_layers == spec.num_hidden_layers
    assert model.config.num_key_value_heads == spec.num_key_value_heads
    assert model.config.max_position_embeddings == spec.max_position_embeddings
    assert model.config.vocab_size == len(tokenizer) == spec.vocab_size
    assert tokenizer.model_max_length == spec.max_position_embeddings

    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert model.generation_config.eos_token_id == im_end
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert model.config.eos_token_id == im_end


def test_it_reports_progress_for_each_build_step(tiny_build: tuple[Path, list[str]]) -> None:
    _, messages = tiny_build
    text = "\n".join(messages)
    for step in ("corpus", "tokenizer", "initialising", "saving", "ready"):
        assert step in text


def test_it_renders_the_chatml_chat_template(tiny_model_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path, local_files_only=True)

    rendered = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    ids = _ids(tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True))

    assert rendered == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi there!<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # Control tokens must be single special tokens, not spelled out byte by byte.
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids.count(tokenizer.eos_token_id) == 2
    assert tokenizer.decode(ids) == rendered


def test_it_round_trips_arbitrary_unicode(tiny_model_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path, local_files_only=True)
    text = "héllo wörld 🙂 世界 \t tabs\nand newlines"

    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_it_is_idempotent(tiny_model_path: Path) -> None:
    marker = tiny_model_path / MARKER_FILE
    weights = tiny_model_path / "model.safetensors"
    before = (marker.stat().st_mtime_ns, weights.stat().st_mtime_ns)
    messages: list[str] = []

    started = time.perf_counter()
    result = build_demo_model(tiny_model_path, "tiny", progress=messages.append)
    elapsed = time.perf_counter() - started

    assert result == tiny_model_path
    assert (marker.stat().st_mtime_ns, weights.stat().st_mtime_ns) == before
    assert elapsed < 0.5
    assert messages == [f"demo model 'tiny' already present at {tiny_model_path}"]


def test_it_rebuilds_identically_when_forced(tmp_path: Path) -> None:
    path = build_demo_model(tmp_path / "tiny", progress=lambda _: None)
    first_weights = load_file(path / "model.safetensors")
    first_tokenizer = (path / "tokenizer.json").read_text()
    first_marker_mtime = (path / MARKER_FILE).stat().st_mtime_ns

    build_demo_model(path, force=True, progress=lambda _: None)

    assert (path / MARKER_FILE).stat().st_mtime_ns != first_marker_mtime
    # Same seed and corpus -> byte-identical tokenizer and weights.
    assert (path / "tokenizer.json").read_text() == first_tokenizer
    second_weights = load_file(path / "model.safetensors")
    assert first_weights.keys() == second_weights.keys()
    assert all(first_weights[k].equal(second_weights[k]) for k in first_weights)
    # The temporary build directory was renamed away, nothing left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_it_rebuilds_when_the_seed_differs(tiny_model_path: Path, tmp_path: Path) -> None:
    rng_before = torch.get_rng_state()

    path = build_demo_model(tmp_path / "tiny", seed=1, progress=lambda _: None)

    assert torch.equal(torch.get_rng_state(), rng_before)  # caller's RNG left alone

    assert json.loads((path / MARKER_FILE).read_text())["seed"] == 1
    assert not load_file(path / "model.safetensors")["lm_head.weight"].equal(
        load_file(tiny_model_path / "model.safetensors")["lm_head.weight"]
    )


def test_it_rejects_an_unknown_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown demo model size"):
        build_demo_model(tmp_path / "x", "huge", progress=lambda _: None)
    assert not (tmp_path / "x").exists()
