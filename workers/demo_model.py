"""Build a small random-weight Llama chat model entirely offline.

The service must be runnable and testable without network access or gated model
downloads, so this module fabricates a model directory that is laid out exactly
like one fetched from the Hugging Face hub (``config.json``, ``model.safetensors``,
``tokenizer.json``, a ChatML chat template, ``generation_config.json``). Workers
then load it through the same ``from_pretrained`` path a real model takes, which
means the demo exercises real code rather than a mock.

The weights are random, so the text it produces is gibberish; it exists to
exercise plumbing, concurrency and throughput, not quality.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.util
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

MARKER_FILE = "autoglm_demo.json"
# Bump when the on-disk layout or the build recipe changes so that stale demo
# models are rebuilt instead of silently reused.
# 2: the tiny model's context window grew from 512 to 2048 tokens.
BUILD_VERSION = 2

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class DemoSize:
    """Architecture of one named demo model."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    max_position_embeddings: int
    vocab_size: int


SIZES: dict[str, DemoSize] = {
    # Small enough that building, loading and generating take well under a second
    # each, so unit tests stay fast on a 2-core machine.
    "tiny": DemoSize(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=192,
        # Long enough for tests to cancel long generations and trim long
        # sessions; RoPE has no position weights, so it costs nothing to build.
        max_position_embeddings=2048,
        vocab_size=1024,
    ),
    # ~98M parameters (untied embeddings): big enough that throughput numbers are
    # dominated by real matmuls rather than Python overhead.
    "100m": DemoSize(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=12,
        intermediate_size=2048,
        max_position_embeddings=2048,
        vocab_size=8192,
    ),
}

# Fixed and sorted so the corpus (and therefore the trained vocabulary) depends
# only on the Python version, never on import order or environment. ~600 KB of
# docstrings: enough distinct words for BPE to reach the 8192-token vocabulary
# of the "100m" size (a dozen modules stall near 5000 merges).
CORPUS_MODULES: tuple[str, ...] = (
    "abc",
    "argparse",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "cmd",
    "codecs",
    "collections",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "doctest",
    "email",
    "email.message",
    "enum",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "html.parser",
    "http.client",
    "http.cookies",
    "http.server",
    "imaplib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "locale",
    "logging",
    "logging.handlers",
    "mailbox",
    "mimetypes",
    "numbers",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pickle",
    "pprint",
    "queue",
    "random",
    "re",
    "sched",
    "secrets",
    "selectors",
    "shlex",
    "shutil",
    "smtplib",
    "socket",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "traceback",
    "types",
    "typing",
    "unittest",
    "unittest.mock",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "weakref",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "zipfile",
    "zoneinfo",
)

# Gives the tokenizer some conversational English and the ChatML framing so that
# chat prompts tokenize into sensible pieces rather than raw bytes.
CHAT_SAMPLE = """\
<|im_start|>system
You are a helpful assistant. Answer clearly and concisely.<|im_end|>
<|im_start|>user
Hello! Can you help me write a short email to my team about the meeting tomorrow?<|im_end|>
<|im_start|>assistant
Of course. Here is a short draft: "Hi everyone, just a reminder that our meeting is tomorrow at
ten in the morning. Please bring your notes and any questions you have. Thanks!"<|im_end|>
<|im_start|>user
What is the capital of France, and why is it famous?<|im_end|>
<|im_start|>assistant
The capital of France is Paris. It is famous for its art, its food, its history and
landmarks such as the Eiffel Tower and the Louvre museum.<|im_end|>
<|im_start|>user
Explain what a large language model is in one paragraph.<|im_end|>
<|im_start|>assistant
A large language model is a neural network trained on a large amount of text to predict the
next word in a sequence. Because it has seen so much writing, it can answer questions,
summarise documents, translate between languages and help people write code or prose.<|im_end|>
<|im_start|>user
Thank you, that was very useful. Have a nice day!<|im_end|>
<|im_start|>assistant
You're welcome! I'm glad I could help. Have a wonderful day.<|im_end|>
"""

# Files without which a directory is not a loadable model; used by the
# idempotency check so a half-copied directory is never mistaken for a build.
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", MARKER_FILE)


def _iter_docstrings(module_name: str) -> Iterator[str]:
    # Read docstrings from the module's source rather than from live objects:
    # importing torch/transformers monkeypatches stdlib classes (e.g. adds
    # methods to logging.Logger), which would make the corpus, and so the
    # vocabulary, depend on what happened to be imported first.
    try:
        spec = importlib.util.find_spec(module_name)
    except ImportError:
        spec = None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return  # missing or C-only in this Python build; the corpus just gets smaller
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc


@functools.cache
def gather_corpus() -> tuple[str, ...]:
    """Return the deterministic local training corpus for the demo tokenizer.

    Stdlib docstrings are the only sizeable English text guaranteed to exist on
    every machine without downloading anything. Cached because parsing ~100
    modules takes most of a second and the result never changes in-process.
    """
    texts: list[str] = [CHAT_SAMPLE]
    seen: set[str] = set()
    for name in CORPUS_MODULES:
        for doc in _iter_docstrings(name):
            if doc not in seen:
                seen.add(doc)
                texts.append(doc)
    return tuple(texts)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, model_max_length: int
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer and wrap it for ``transformers``.

    Byte-level BPE can encode any string (no unknown tokens), which matters
    because users can send arbitrary Unicode to the API.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        # Guarantees all 256 bytes are in the vocabulary even if the corpus never
        # uses some of them.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=ENDOFTEXT,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START],
        chat_template=CHATML_TEMPLATE,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def _is_complete(path: Path, size: str, seed: int) -> bool:
    if not all((path / name).is_file() for name in _REQUIRED_FILES):
        return False
    try:
        marker = json.loads((path / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return marker == {"size": size, "seed": seed, "version": BUILD_VERSION}


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    # save_pretrained draws its own tqdm bar; we already report via `progress`,
    # and a bar in the middle of a CLI's output (or a log file) is just noise.
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _normalise_permissions(directory: Path) -> None:
    # safetensors writes the weights file with mode 0600, which would hide the
    # model from a worker running as another user. Copy the mode of a file
    # written the ordinary way (so it reflects the umask) rather than calling
    # os.umask(), which briefly changes process-wide state.
    mode = (directory / "config.json").stat().st_mode & 0o777
    for file in directory.iterdir():
        if file.is_file():
            file.chmod(mode)


def _replace_dir(src: Path, dst: Path) -> None:
    # os.replace cannot overwrite a non-empty directory, so move the old one
    # aside first. A reader sees the old model, briefly no model, or the new
    # one, but never a mix of files from both.
    old: Path | None = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_demo_model(
    path: str | os.PathLike[str],
    size: str = "tiny",
    *,
    force: bool = False,
    progress: Callable[[str], object] = print,
    seed: int = 0,
) -> Path:
    """Build (or reuse) a random-weight demo chat model at ``path``.

    Idempotent so that start-up scripts and tests can call it unconditionally:
    an existing complete build of the same size, seed and version is returned
    untouched unless ``force`` is set. The build happens in a temporary sibling
    directory that is renamed into place at the end, so a crash or a concurrent
    loader never sees a half-written model.

    Returns the resolved model directory.
    """
    if size not in SIZES:
        raise ValueError(f"unknown demo model size {size!r}; choose from {sorted(SIZES)}")
    spec = SIZES[size]
    path = Path(path).expanduser().resolve()

    if not force and _is_complete(path, size, seed):
        progress(f"demo model {size!r} already present at {path}")
        return path

    started = time.perf_counter()
    # Imported here so that the idempotent fast path above does not pay for
    # importing torch/transformers (seconds).
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    progress("collecting tokenizer corpus from stdlib docstrings")
    texts = gather_corpus()
    progress(f"training byte-level BPE tokenizer (vocab {spec.vocab_size}) on {len(texts)} texts")
    tokenizer = train_tokenizer(texts, spec.vocab_size, spec.max_position_embeddings)

    progress(f"initialising random Llama model {size!r} (seed {seed})")
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    config = LlamaConfig(
        # len() rather than vocab_size: it counts special/added tokens as well.
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=ids[ENDOFTEXT],
        eos_token_id=ids[IM_END],
        pad_token_id=ids[ENDOFTEXT],
        tie_word_embeddings=False,
    )
    # fork_rng: seed the init without clobbering the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    model.generation_config = GenerationConfig(
        bos_token_id=ids[ENDOFTEXT],
        eos_token_id=ids[IM_END],
        pad_token_id=ids[ENDOFTEXT],
    )

    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkdtemp: its 0700 mode would survive the rename and hide the model
    # from a worker running as another user.
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        progress(f"saving {n_params / 1e6:.1f}M-parameter model and tokenizer to {path}")
        with _quiet_progress_bars():
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _normalise_permissions(tmp)
        # Written last: its presence is what marks the directory as complete.
        marker = {"size": size, "seed": seed, "version": BUILD_VERSION}
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
        # Another process may have finished the same build while we worked.
        if not force and _is_complete(path, size, seed):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"demo model {size!r} ready at {path} in {time.perf_counter() - started:.1f}s")
    return path
