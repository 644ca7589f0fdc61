"""Shared fixtures: one tiny demo model per test session.

Building it takes well under a second once torch is imported, but loading it
in every test would still add up, so both the directory and a loaded copy are
session-scoped. Tests must treat them as read-only. (workers/tests uses them too.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# Tests must never reach the network, even by accident.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from engine.engine import BatchingEngine  # noqa: E402
from engine.registry import LoadedModel, ModelRegistry  # noqa: E402
from workers.demo_model import build_demo_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The built tiny model's directory and the progress messages of its build."""
    messages: list[str] = []
    path = build_demo_model(
        tmp_path_factory.mktemp("models") / "tiny", "tiny", progress=messages.append
    )
    return path, messages


@pytest.fixture(scope="session")
def tiny_model_path(tiny_build: tuple[Path, list[str]]) -> Path:
    return tiny_build[0]


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_path: Path) -> LoadedModel:
    # fp32, whatever this CPU would pick: the tests compare batched with unbatched greedy output
    # token for token, which bf16 rounding does not preserve.
    return ModelRegistry({"tiny": tiny_model_path}, dtype="float32").get("tiny")


@pytest.fixture
def engine(tiny_loaded: LoadedModel) -> Iterator[BatchingEngine]:
    """A running engine over the tiny model, stopped after the test."""
    # Small token budgets so that long prompts are prefilled in several chunks
    # and short ones are packed together.
    engine = BatchingEngine(
        tiny_loaded, max_batch_size=8, max_batch_tokens=80, max_prefill_tokens=64
    )
    engine.start()
    yield engine
    engine.stop(drain=False)
