"""Model registry: load-once, thread-safe resident models (tiny random demo model).

Generation on a loaded model is tested in test_generation.py.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from engine.registry import (
    LoadedModel,
    ModelRegistry,
    UnknownModelError,
    select_device_and_dtype,
)
from workers.demo_model import SIZES


def test_it_loads_a_model_once_under_concurrent_first_use(tiny_model_path: Path) -> None:
    registry = ModelRegistry({"tiny": tiny_model_path})
    barrier = threading.Barrier(8)

    def first_use(_: int) -> LoadedModel:
        barrier.wait()  # maximise the overlap of the first calls
        return registry.get("tiny")

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(first_use, range(8)))

    assert registry.load_count == 1
    assert all(result is results[0] for result in results)
    assert registry.loaded_names() == ["tiny"]
    assert registry.get("tiny") is results[0]
    assert registry.load_count == 1


def test_it_raises_for_an_unknown_model(tiny_model_path: Path) -> None:
    registry = ModelRegistry({"tiny": tiny_model_path})

    with pytest.raises(UnknownModelError, match="nope"):
        registry.get("nope")
    assert registry.load_count == 0
    assert registry.loaded_names() == []


def test_it_does_not_cache_a_failed_load(tmp_path: Path) -> None:
    registry = ModelRegistry({"missing": tmp_path / "missing"})

    for _ in range(2):  # the second call retries rather than replaying a cached failure
        with pytest.raises(FileNotFoundError):
            registry.get("missing")
    assert registry.load_count == 0
    assert registry.loaded_names() == []
    assert registry.names() == ["missing"]


def test_it_describes_the_loaded_model(tiny_loaded: LoadedModel, tiny_model_path: Path) -> None:
    assert tiny_loaded.name == "tiny"
    assert tiny_loaded.path == tiny_model_path
    assert tiny_loaded.context_window == SIZES["tiny"].max_position_embeddings
    assert tiny_loaded.load_seconds > 0
    assert not tiny_loaded.model.training
    assert next(tiny_loaded.model.parameters()).dtype == tiny_loaded.dtype
    assert next(tiny_loaded.model.parameters()).device.type == tiny_loaded.device.type


def test_it_logs_each_load(tiny_model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = ModelRegistry({"tiny": tiny_model_path})

    with caplog.at_level(logging.INFO, logger="engine.registry"):
        registry.get("tiny")
        registry.get("tiny")

    loads = [r for r in caplog.records if r.getMessage() == "model loaded"]
    assert len(loads) == 1
    assert loads[0].model == "tiny"
    assert loads[0].load_seconds >= 0


def test_it_selects_device_and_dtype_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("engine.registry._cpu_has_fast_bf16", lambda: False)
    assert select_device_and_dtype() == (torch.device("cpu"), torch.float32)
    monkeypatch.setattr("engine.registry._cpu_has_fast_bf16", lambda: True)
    assert select_device_and_dtype("", "") == (torch.device("cpu"), torch.bfloat16)
    assert select_device_and_dtype("cpu", "bfloat16") == (
        torch.device("cpu"),
        torch.bfloat16,
    )
    with pytest.raises(ValueError, match="AUTOGLM_DTYPE"):
        select_device_and_dtype(dtype="int3")
    with pytest.raises(ValueError, match="AUTOGLM_DEVICE"):
        select_device_and_dtype(device="tpu")
    with pytest.raises(ValueError, match="CUDA"):
        select_device_and_dtype(device="cuda")


def test_it_refuses_to_unload_a_model_in_use(tiny_model_path):
    from engine.registry import ModelInUseError, ModelRegistry

    registry = ModelRegistry({"tiny": tiny_model_path})
    with registry.use("tiny") as loaded:
        assert loaded.memory_bytes > 0
        with pytest.raises(ModelInUseError):
            registry.unload("tiny")
        assert registry.loaded_names() == ["tiny"]
    assert registry.unload("tiny") is True
    assert registry.loaded_names() == []
    assert registry.unload("tiny") is False
    registry.get("tiny")
    assert registry.load_count == 2  # loaded again after an unload
