"""Process-wide registry of resident models.

Loading a model costs seconds (or minutes for a real one) and gigabytes of
memory, so each worker process loads a model at most once, on first use, and
keeps it for the life of the process. Many worker threads may ask for the same
model at once when a process starts; the registry makes sure exactly one of
them performs the load while the others wait for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.model_files import ensure_model_dir
from engine.support import check_config_loadable, check_servable

logger = logging.getLogger(__name__)

# Where converted GGUF files go when the caller names no cache (the worker passes its data dir).
DEFAULT_CACHE_DIR = Path("~/.cache/autoglm")

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

_threads_lock = threading.Lock()
_threads_configured = False


class UnknownModelError(LookupError):
    """Raised when a model name is not in the registry's configuration."""


class ModelInUseError(RuntimeError):
    """Raised when unloading a model that jobs are still using."""


@dataclass(eq=False)  # identity semantics: two loads of one checkpoint are different objects
class LoadedModel:
    """A model and its tokenizer, resident on a device and ready to generate."""

    name: str
    path: Path
    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    context_window: int
    load_seconds: float
    memory_bytes: int = 0
    # Serialises generate() calls on this model: HF generate is not designed for
    # concurrent use of one model instance, and running two at once would only
    # split the same compute anyway.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def select_device_and_dtype(
    device: str | None = None, dtype: str | None = None
) -> tuple[torch.device, torch.dtype]:
    """Choose where and in which precision to run models.

    Defaults to CUDA with bfloat16 (half the memory, native tensor-core format)
    when a GPU is present; otherwise CPU, in bfloat16 when the CPU has bf16
    instructions (AMX or AVX512-BF16), else float32 (half-precision matmuls
    without them are slower than fp32). ``device`` (``cpu``/``cuda``/
    ``cuda:N``) and ``dtype`` (``float32``/``bfloat16``/``float16``) override
    the choice, e.g. to benchmark one configuration against another; None or
    "" means auto. The worker passes its ``AUTOGLM_DEVICE`` and
    ``AUTOGLM_DTYPE`` settings, which the error messages name.
    """
    device_name = (device or "").strip().lower()
    if not device_name:
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name != "cpu" and not device_name.startswith("cuda"):
        raise ValueError(f"AUTOGLM_DEVICE must be 'cpu' or 'cuda', got {device_name!r}")
    torch_device = torch.device(device_name)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("AUTOGLM_DEVICE asks for CUDA but torch sees no CUDA device")

    dtype_name = (dtype or "").strip().lower()
    if dtype_name:
        try:
            torch_dtype = _DTYPES[dtype_name]
        except KeyError:
            raise ValueError(
                f"AUTOGLM_DTYPE must be float32, bfloat16 or float16, got {dtype_name!r}"
            ) from None
    elif torch_device.type == "cuda":
        # Pre-Ampere GPUs emulate bf16 slowly; fp16 is their native half type.
        torch_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        torch_dtype = torch.bfloat16 if _cpu_has_fast_bf16() else torch.float32
    return torch_device, torch_dtype


def _cpu_has_fast_bf16() -> bool:
    """True on CPUs with bf16 matrix instructions (AMX, or AVX512-BF16), where bf16 serving beats
    fp32: 2.2x on the 2-core EPYC of our CI (bench/engine_bench.py). Without them torch
    emulates bf16 and fp32 is faster."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _available_cpus() -> int:
    # os.cpu_count() reports every CPU on the host, even when a container or
    # taskset restricts us to a few; oversubscribing threads slows torch down.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _configure_cpu_threads(threads: int | None) -> None:
    # torch's intra-op pool size is process-wide; set it once so that several
    # models loading in parallel do not fight over it.
    global _threads_configured
    with _threads_lock:
        if _threads_configured:
            return
        threads = threads or _available_cpus()
        torch.set_num_threads(threads)
        _threads_configured = True
        logger.info("torch cpu threads configured", extra={"torch_threads": threads})


def text_config(model: Any) -> Any:
    """The language model's config (multimodal configs nest its settings)."""
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def vocab_size(model: Any) -> int:
    """How many token ids the model embeds."""
    return int(model.get_input_embeddings().num_embeddings)


def _context_window(model: Any, tokenizer: Any) -> int:
    config = text_config(model)
    window = getattr(config, "max_position_embeddings", None)
    if window is None:
        # Tokenizers without a limit report a huge sentinel (int(1e30)).
        window = tokenizer.model_max_length
        if window is None or window > 10_000_000:
            raise ValueError(f"cannot determine the context window of {model.name_or_path}")
    return int(window)


def load_model(
    name: str,
    path: str | os.PathLike[str],
    *,
    device: str | None = None,
    dtype: str | None = None,
    torch_threads: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Load one model from a local directory or GGUF file onto ``device`` in ``dtype``.

    ``device`` and ``dtype`` are as :func:`select_device_and_dtype` takes them
    (None: auto). On CPU, ``torch_threads`` sizes torch's process-wide thread
    pool, once per process (None: the CPUs this process may use). A GGUF file
    is converted once into ``cache_dir`` (see ``engine.model_files``). Uses the
    plain ``from_pretrained`` path so that the demo model and real
    checkpoints are loaded identically. Most callers want
    :meth:`ModelRegistry.get`, which caches the result.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch_device, torch_dtype = select_device_and_dtype(device, dtype)
    if torch_device.type == "cpu":
        _configure_cpu_threads(torch_threads)

    started = time.perf_counter()
    # A missing local directory would otherwise be taken for a hub repo id and
    # fail with a confusing "offline mode" error.
    path = ensure_model_dir(name, path, Path(cache_dir or DEFAULT_CACHE_DIR).expanduser())
    # local_files_only in addition to HF_HUB_OFFLINE: the env var is ignored if
    # huggingface_hub was imported before this package set it.
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    check_config_loadable(config, name)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        path, config=config, dtype=torch_dtype, local_files_only=True
    )
    check_servable(model, name)
    model.to(torch_device)
    model.eval()
    _warm_up(model, torch_device)
    load_seconds = time.perf_counter() - started
    memory_bytes = sum(t.numel() * t.element_size() for t in model.parameters()) + sum(
        t.numel() * t.element_size() for t in model.buffers()
    )

    loaded = LoadedModel(
        name=name,
        path=path,
        model=model,
        tokenizer=tokenizer,
        device=torch_device,
        dtype=torch_dtype,
        context_window=_context_window(model, tokenizer),
        load_seconds=load_seconds,
        memory_bytes=memory_bytes,
    )
    logger.info(
        "model loaded",
        extra={
            "model": name,
            "load_seconds": round(load_seconds, 3),
            "device": str(torch_device),
            "dtype": str(torch_dtype).removeprefix("torch."),
            "memory_mb": round(memory_bytes / 2**20, 1),
        },
    )
    return loaded


def _warm_up(model: Any, device: torch.device) -> None:
    """One tiny forward pass, so the first real job does not pay for lazy kernel set-up.

    Called in the process that serves (never before a fork: a forward pass initialises the
    OpenMP pool, which then hangs in a forked child).
    """
    with torch.inference_mode():
        model(input_ids=torch.zeros((1, 4), dtype=torch.long, device=device))


class ModelRegistry:
    """Thread-safe, load-once cache of models keyed by name.

    ``specs`` maps each servable model name to its local directory or GGUF file.
    Nothing is loaded up front, so a worker only pays for the models it is asked
    to serve. ``device``, ``dtype``, ``torch_threads`` and ``cache_dir`` are
    passed to :func:`load_model`.
    """

    def __init__(
        self,
        specs: Mapping[str, str | os.PathLike[str]],
        *,
        device: str | None = None,
        dtype: str | None = None,
        torch_threads: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._device = device
        self._dtype = dtype
        self._torch_threads = torch_threads
        self._cache_dir = cache_dir
        self._specs: dict[str, Path] = {name: Path(p) for name, p in specs.items()}
        # One lock per model: loading model A must not block requests for an
        # already-resident model B.
        self._locks: dict[str, threading.Lock] = {name: threading.Lock() for name in self._specs}
        self._models: dict[str, LoadedModel] = {}
        self._in_use: dict[str, int] = {}
        self._state_lock = threading.Lock()
        self._load_count = 0

    @property
    def load_count(self) -> int:
        """Total number of loads performed; lets tests and logs verify load-once."""
        return self._load_count

    def names(self) -> list[str]:
        """Names of all configured models, resident or not."""
        return sorted(self._specs)

    def loaded_names(self) -> list[str]:
        """Names of the models currently resident in this process."""
        with self._state_lock:
            return sorted(self._models)

    def get(self, name: str) -> LoadedModel:
        """Return the resident model ``name``, loading it first if needed.

        Concurrent first calls for the same model perform a single load; the
        other callers block until it finishes and then share the result. A
        failed load is not cached, so a later call retries it.
        """
        # Fast path without locking: once loaded, a model is never replaced,
        # and a single dict lookup is atomic.
        loaded = self._models.get(name)
        if loaded is not None:
            return loaded
        try:
            lock = self._locks[name]
        except KeyError:
            raise UnknownModelError(
                f"unknown model {name!r}; configured models: {', '.join(self.names()) or 'none'}"
            ) from None
        with lock:
            loaded = self._models.get(name)
            if loaded is None:
                loaded = load_model(
                    name,
                    self._specs[name],
                    device=self._device,
                    dtype=self._dtype,
                    torch_threads=self._torch_threads,
                    cache_dir=self._cache_dir,
                )
                with self._state_lock:
                    self._models[name] = loaded
                    self._load_count += 1
        return loaded

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[LoadedModel]:
        """The resident model ``name`` for the length of a job; it cannot be unloaded meanwhile."""
        loaded = self.get(name)
        with self._state_lock:
            self._in_use[name] = self._in_use.get(name, 0) + 1
        try:
            yield loaded
        finally:
            with self._state_lock:
                self._in_use[name] -= 1

    def unload(self, name: str) -> bool:
        """Drop a resident model to free its memory; refuses while a job uses it.

        Returns False when the model was not loaded. Raises ModelInUseError when in use.
        """
        with self._locks.get(name, threading.Lock()), self._state_lock:
            if self._in_use.get(name, 0) > 0:
                raise ModelInUseError(f"model {name!r} is in use by {self._in_use[name]} job(s)")
            loaded = self._models.pop(name, None)
        if loaded is None:
            return False
        del loaded
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        logger.info("model unloaded", extra={"model": name})
        return True
