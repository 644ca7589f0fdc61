"""Continuous batching: one engine thread serves many concurrent generation jobs on one model.

Jobs are submitted from any thread (:meth:`BatchingEngine.submit` returns an
:class:`EngineHandle` to wait on or cancel). A single engine thread owns the
model and repeats one *step*:

1. take in new submissions; end jobs that were cancelled (``handle.cancel()``)
   or ran past their ``timeout``;
2. admit waiting jobs into the batch while it has fewer than ``max_batch_size``
   jobs and the KV cache budget (``max_cache_bytes``) allows;
3. one *prefill* forward over the prompt tokens of newly admitted jobs, packed
   into one row (each prompt chunk attends only to its own job, see
   _engine_attention). Long prompts are split into chunks, so a step never
   processes more than ``max_batch_tokens`` tokens (prefill chunk + one token
   per decoding job) and a long prompt cannot stall decoding jobs for long;
4. one *decode* forward: one new token for every job past its prompt;
5. per-job sampling (greedy, or seeded Gumbel-max sampling with the job's own
   temperature/top_p/generator, exactly as ``generation.generate`` samples)
   and per-job text handling with :class:`~workers.generation.CompletionMonitor`
   (streaming deltas, stop strings, ``should_stop``, end-of-turn, max_tokens);
   finished jobs leave the batch.

So a job submitted while others generate joins the running batch at the next
step, and a finished job frees its place at once.

KV cache: one preallocated buffer per layer of shape
``[rows, kv_heads, capacity, head_dim]``; each job in the batch owns a row.
Decoding jobs occupy rows ``0..n-1``, so the decode forward attends over one
contiguous block of the buffer, read in place (no per-step gather, padding or
concatenation); rows have different lengths, so the decode forward gets
per-row ``position_ids`` and a padding mask. Rows are compacted (a few row
copies) when jobs leave. The buffers grow on demand, never beyond
``max_cache_bytes`` (admission reserves room for each job's prompt +
max_tokens), and are freed after ``idle_release_s`` without work.

The cache is a duck-typed transformers ``Cache`` (the model calls its
``update``) and attention goes through an attention function registered with
transformers' ``AttentionInterface`` (switched on for the engine's forwards
only), so any decoder-only model with full attention runs through its own
``forward``. Prompt chunks use transformers' sdpa attention, a fresh prompt
exactly as generate() computes it, and float32 decoding uses sdpa with the
padding mask, so greedy output in float32 equals generate()'s token for
token. In bfloat16/float16, decode attention is two batched GEMVs instead of
torch's CPU flash-attention kernel, which is several times slower there for
a single query.

Errors: a request that cannot be served (bad parameters, token ids outside the
vocabulary, prompt too long) is rejected by ``submit`` with a GenerationError.
An exception from a job's ``on_text``/``should_stop`` callback fails that job
only; its batch-mates carry on. Anything else that goes wrong on the engine
thread (a model forward raising, out of memory, a bug) is fatal: every
in-flight and queued job fails with :class:`EngineDeadError`, ``alive``
becomes False, ``on_dead`` is called, and further submissions are refused, so
the worker can exit and be restarted rather than hang.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from workers.generation import (
    CompletionMonitor,
    GenerationError,
    GenerationResult,
    InvalidGenerationRequest,
    PromptTooLongError,
    encode_prompt,
    eos_token_ids,
    make_decoder,
    sampling_processors,
    seeded_generator,
    validate_sampling,
    validate_stop,
)
from workers.registry import LoadedModel

logger = logging.getLogger(__name__)

__all__ = [
    "BatchingEngine",
    "EngineDeadError",
    "EngineHandle",
    "EngineRequest",
    "EngineStats",
    "JobTimeoutError",
    "TransformersEngine",
    "generate_messages",
]


# -- public types ------------------------------------------------------------------------------


class EngineDeadError(RuntimeError):
    """The engine cannot run the job: it crashed, or was stopped before the job finished.

    Deliberately not a GenerationError: it is the worker's failure, not the
    request's, so the job should be failed as an internal error (or retried
    on another worker), never reported as a bad request. ``reason`` says what
    happened; after a crash ``__cause__`` is the original exception.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JobTimeoutError(GenerationError, TimeoutError):
    """The job ran past its own ``timeout`` (time spent queued included) and was aborted.

    ``partial`` is what it produced before that: the text already streamed
    through ``on_text`` (nothing held back is released), the tokens to bill,
    and finish_reason "cancelled".
    """

    def __init__(self, timeout: float, partial: GenerationResult) -> None:
        super().__init__(f"generation did not finish within its {timeout:g}s timeout")
        self.timeout = timeout
        self.partial = partial


@dataclass
class EngineRequest:
    """One generation job: a tokenized prompt and its sampling parameters.

    The parameters mean what they mean for ``generation.generate``:
    ``temperature == 0`` is greedy; ``seed`` makes sampling reproducible,
    whatever else is in the batch; ``stop`` is a string or up to 4 of them;
    ``on_text`` receives the streamed deltas and ``should_stop`` is asked
    once before the prompt is processed and once per generated token. Both
    callbacks run on the engine thread between forward passes, so they must
    be quick (every job in the batch waits for them). ``timeout`` (seconds,
    counted from submission) bounds the whole job, queueing included.
    """

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: str | Sequence[str] = ()
    on_text: Callable[[str], None] | None = None
    should_stop: Callable[[], bool] | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of an engine's state and counters, for metrics and logs."""

    alive: bool
    batch_size: int  # jobs in the running batch (prefilling + decoding)
    decoding: int
    prefilling: int
    waiting: int  # submitted, not yet admitted to the batch
    steps: int  # engine iterations that ran at least one forward pass
    prefill_forwards: int
    decode_forwards: int
    prompt_tokens: int  # prompt tokens processed
    generated_tokens: int
    jobs_finished: int  # with a result (stop, length, cancelled)
    jobs_failed: int  # with an error (callback error, timeout, engine death)
    kv_cache_bytes: int  # currently allocated


class EngineHandle:
    """A submitted job: wait for its result, or cancel it. Thread-safe."""

    def __init__(self, request: EngineRequest, prompt_tokens: int, wake: Callable[[], None]):
        self.request = request
        self.prompt_tokens = prompt_tokens
        # time.monotonic() stamps, for latency metrics (TTFT = first_token_at - submitted_at).
        self.submitted_at = time.monotonic()
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self._wake = wake
        self._cancel_requested = False
        self._done = threading.Event()
        self._resolve_lock = threading.Lock()
        self._result: GenerationResult | None = None
        self._error: BaseException | None = None

    def cancel(self) -> None:
        """Ask the engine to end the job; observed before its next decode step.

        The job then finishes normally with finish_reason "cancelled" and the
        text so far (held-back text is released through ``on_text``). No-op
        once the job is done.
        """
        self._cancel_requested = True
        self._wake()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> GenerationResult:
        """Wait for the job and return its result, or raise its error.

        Raises the job's own error: a GenerationError subclass
        (JobTimeoutError when the job's ``timeout`` expired) or whatever its
        ``on_text``/``should_stop`` callback raised; EngineDeadError if the
        engine crashed or was stopped first. If ``timeout`` (seconds to wait
        here, unrelated to the job's own) passes first, raises the builtin
        TimeoutError and the job keeps running.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"the job did not finish within {timeout}s")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the job; return its error, or None if it produced a result."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"the job did not finish within {timeout}s")
        return self._error

    def _resolve(
        self, result: GenerationResult | None = None, error: BaseException | None = None
    ) -> bool:
        with self._resolve_lock:  # first resolution wins
            if self._done.is_set():
                return False
            self._result, self._error = result, error
            self.finished_at = time.monotonic()
            self._done.set()
            return True


class Engine(Protocol):
    """What generate_messages (and the worker) need from either engine."""

    def submit(self, request: EngineRequest) -> EngineHandle: ...


def generate_messages(
    engine: Engine,
    loaded: LoadedModel,
    messages: list[dict],
    *,
    max_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: str | Sequence[str] = (),
    on_text: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    timeout: float | None = None,
) -> GenerationResult:
    """``generation.generate`` through an engine: chat template, submit, wait.

    Same arguments, validation, errors and result as ``generate`` (greedy
    output is token-for-token the same), plus ``timeout``; the callbacks run
    on the engine thread. Blocks until the job is done.
    """
    handle = engine.submit(  # submit() validates the request
        EngineRequest(
            prompt_ids=encode_prompt(loaded, messages),
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=stop,
            on_text=on_text,
            should_stop=should_stop,
            timeout=timeout,
        )
    )
    return handle.result()


# -- request validation shared by both engines -------------------------------------------------


def _validated_prompt(prompt_ids: Sequence[int], vocab_size: int) -> list[int]:
    if isinstance(prompt_ids, str | bytes) or not isinstance(prompt_ids, Sequence):
        raise InvalidGenerationRequest("prompt_ids must be a list of token ids")
    if not prompt_ids:
        raise InvalidGenerationRequest("prompt_ids must not be empty")
    ids: list[int] = []
    for token in prompt_ids:
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab_size:
            raise InvalidGenerationRequest(
                f"prompt_ids must be token ids in [0, {vocab_size}), got {token!r}"
            )
        ids.append(int(token))
    return ids


def _validate_request(request: EngineRequest, vocab_size: int, context_window: int):
    prompt_ids = _validated_prompt(request.prompt_ids, vocab_size)
    validate_sampling(request.max_tokens, request.temperature, request.top_p)
    stops = validate_stop(request.stop)
    if len(prompt_ids) > context_window - request.max_tokens:
        raise PromptTooLongError(len(prompt_ids), request.max_tokens, context_window)
    if request.seed is not None and (
        isinstance(request.seed, bool) or not isinstance(request.seed, int)
    ):
        raise InvalidGenerationRequest(f"seed must be an integer, got {request.seed!r}")
    timeout = request.timeout
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise InvalidGenerationRequest(f"timeout must be a positive number, got {timeout!r}")
    return prompt_ids, stops


def _vocab_size(model: Any) -> int:
    return int(model.get_input_embeddings().num_embeddings)


def _text_config(model: Any) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


# -- the KV cache ------------------------------------------------------------------------------


def _round_up(value: int, quantum: int) -> int:
    return -(-value // quantum) * quantum


class _SlotKVCache:
    """Per-layer key/value buffers ``[rows, kv_heads, capacity, head_dim]``, one row per job.

    Duck-types the part of transformers' ``Cache`` that a decoder-only model's
    forward uses: attention layers call :meth:`update` with the new keys and
    values. Before each forward the engine sets the plan (:meth:`plan_decode`
    or :meth:`plan_prefill`): which rows and positions the new tokens belong to.
    """

    is_compileable = False
    ROW_QUANTUM = 8
    LENGTH_QUANTUM = 64

    def __init__(
        self,
        *,
        num_layers: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        max_rows: int,
        max_length: int,
    ) -> None:
        self.num_layers = num_layers
        self.kv_heads = kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.device = device
        self.max_rows = max_rows
        self.max_length = max_length
        element = torch.tensor([], dtype=dtype).element_size()
        self.bytes_per_token = num_layers * 2 * kv_heads * head_dim * element
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.rows = 0
        self.capacity = 0
        self.plan: _Plan | None = None

    # Sizing.

    @property
    def nbytes(self) -> int:
        return self.rows * self.capacity * self.bytes_per_token

    def allocation_bytes(self, rows: int, length: int) -> int:
        """Bytes the buffers would take to hold ``rows`` jobs of up to ``length`` tokens."""
        rows = min(self.max_rows, _round_up(rows, self.ROW_QUANTUM))
        length = min(self.max_length, _round_up(length, self.LENGTH_QUANTUM))
        return rows * length * self.bytes_per_token

    def ensure(self, rows: int, length: int, live_rows: int, length_limit: int) -> None:
        """Grow the buffers to hold ``rows`` rows of ``length`` tokens, keeping live data.

        ``length_limit`` is the longest any admitted job may get (prompt +
        max_tokens): capacity never exceeds it, so allocation stays within
        what admission accounted for, and when it is near, capacity jumps
        straight to it (one allocation for the whole batch). Otherwise it
        grows by a quarter at a time: decode attention reads the whole
        capacity, so overshooting costs time on every step.
        """
        new_rows, new_capacity = self.rows, self.capacity
        if rows > self.rows:
            new_rows = min(self.max_rows, _round_up(rows, self.ROW_QUANTUM))
        if length > self.capacity:
            limit = _round_up(max(length, min(length_limit, self.max_length)), 8)
            target = _round_up(length, self.LENGTH_QUANTUM)
            if limit <= 2 * target:
                target = limit
            else:
                step = max(self.LENGTH_QUANTUM, self.capacity // 4)
                target = min(limit, max(target, _round_up(self.capacity + step, 64)))
            new_capacity = target
        if (new_rows, new_capacity) == (self.rows, self.capacity):
            return
        shape = (new_rows, self.kv_heads, new_capacity, self.head_dim)
        keep_rows, keep_len = min(live_rows, self.rows), self.capacity
        keys, values = [], []
        for layer in range(self.num_layers):
            # Zeroed, not empty: attention reads (masked) padding slots, and a NaN
            # bit pattern there would poison the row (0 * NaN is NaN).
            k = torch.zeros(shape, dtype=self.dtype, device=self.device)
            v = torch.zeros(shape, dtype=self.dtype, device=self.device)
            if keep_rows and keep_len:
                k[:keep_rows, :, :keep_len] = self.keys[layer][:keep_rows]
                v[:keep_rows, :, :keep_len] = self.values[layer][:keep_rows]
            keys.append(k)
            values.append(v)
        self.keys, self.values = keys, values
        self.rows, self.capacity = new_rows, new_capacity

    def release(self) -> None:
        self.keys, self.values = [], []
        self.rows = self.capacity = 0

    # Row moves (the engine keeps decoding jobs in rows 0..n-1).

    def copy_row(self, src: int, dst: int, length: int) -> None:
        if length:
            for buffers in (self.keys, self.values):
                for buf in buffers:
                    buf[dst, :, :length] = buf[src, :, :length]

    def swap_rows(self, a: int, a_len: int, b: int, b_len: int) -> None:
        for buffers in (self.keys, self.values):
            for buf in buffers:
                saved = buf[a, :, :a_len].clone()
                if b_len:
                    buf[a, :, :b_len] = buf[b, :, :b_len]
                if a_len:
                    buf[b, :, :a_len] = saved

    # The transformers Cache surface.

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        plan = self.plan
        assert plan is not None, "engine cache used outside an engine forward"
        k_buf, v_buf = self.keys[layer_idx], self.values[layer_idx]
        if plan.decode:
            # key_states: [n, kv_heads, 1, head_dim] -> row r, position positions[r].
            k_buf[plan.row_index, :, plan.pos_index] = key_states[:, :, 0]
            v_buf[plan.row_index, :, plan.pos_index] = value_states[:, :, 0]
            return k_buf[: plan.rows, :, : plan.kv_len], v_buf[: plan.rows, :, : plan.kv_len]
        for row, start, length, offset in plan.segments:
            k_buf[row, :, start : start + length] = key_states[0, :, offset : offset + length]
            v_buf[row, :, start : start + length] = value_states[0, :, offset : offset + length]
        # The engine's attention function attends each chunk to its own row.
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self.plan is None else self.plan.q_offset

    def get_query_offset(self, layer_idx: int = 0) -> int:
        return 0 if self.plan is None else self.plan.q_offset

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return (query_length if self.plan is None else self.plan.kv_len), 0


@dataclass
class _Plan:
    """What the current engine forward computes, for the cache and the attention function."""

    cache: _SlotKVCache
    decode: bool
    q_offset: int
    kv_len: int
    # Decode: rows 0..rows-1, one token each at pos_index[r]; mask is [rows, 1, 1, kv_len].
    rows: int = 0
    row_index: torch.Tensor | None = None
    pos_index: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    # Prefill: packed prompt chunks (row, start, length, offset in the packed row).
    segments: Sequence[tuple[int, int, int, int]] = ()


_ENGINE_ATTENTION = "autoglm_engine"
# Decode attends over the whole capacity (a contiguous block) unless that is
# more than this many times the longest row.
_FULL_CAPACITY_RATIO = 2
_active_plan: ContextVar[_Plan | None] = ContextVar("autoglm_engine_plan", default=None)


def _engine_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention for the engine's forwards (registered with transformers' AttentionInterface).

    Prefill: each packed prompt chunk attends only to its own job, through
    transformers' own sdpa attention (a fresh prompt exactly as generate()
    computes it), so packing costs no attention over other prompts. Decode in
    float32: transformers' sdpa with the padding mask. Decode in half
    precision: two batched GEMVs over the cache rows, several times faster on
    CPU than torch's flash-attention kernel with a single query.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plan = _active_plan.get()
    if plan is None:  # not an engine forward
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if plan.decode:
        if query.dtype == torch.float32 or query.device.type != "cpu":
            return sdpa_attention_forward(
                module, query, key, value, plan.mask, dropout=dropout, scaling=scaling, **kwargs
            )
        return _gemv_attention(query, key, value, plan.mask, scaling), None

    cache, layer = plan.cache, module.layer_idx
    outputs = []
    for row, start, length, offset in plan.segments:
        q = query[:, :, offset : offset + length]
        if start == 0:
            k = key[:, :, offset : offset + length]
            v = value[:, :, offset : offset + length]
            mask = None  # sdpa's is_causal, as for an unbatched prompt
        else:
            end = start + length
            k = cache.keys[layer][row : row + 1, :, :end]
            v = cache.values[layer][row : row + 1, :, :end]
            positions = torch.arange(start, end, device=query.device)
            mask = torch.arange(end, device=query.device)[None, :] <= positions[:, None]
            mask = mask[None, None]
        out, _ = sdpa_attention_forward(
            module, q, k, v, mask, dropout=dropout, scaling=scaling, is_causal=True
        )
        outputs.append(out)  # [1, length, heads, head_dim]
    return (outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)), None


def _gemv_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float | None,
) -> torch.Tensor:
    """Single-query attention: query [B, Hq, 1, D] over key/value [B, Hkv, L, D]."""
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    q = query.reshape(batch, kv_heads, heads // kv_heads, dim)  # grouped query heads
    scale = dim**-0.5 if scaling is None else scaling
    # K @ q^T keeps the cache in its natural layout (no transposed copy of K).
    scores = torch.matmul(key, q.transpose(-1, -2)).transpose(-1, -2).float() * scale
    if mask is not None:
        scores = scores + mask  # additive float mask [B, 1, 1, L]
    probs = scores.softmax(dim=-1).to(value.dtype)
    out = torch.matmul(probs, value)  # [B, Hkv, group, D]
    return out.reshape(batch, heads, 1, dim).transpose(1, 2)


def _register_engine_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(_ENGINE_ATTENTION, _engine_attention)
    AttentionMaskInterface.register(_ENGINE_ATTENTION, sdpa_mask)


# -- the engine --------------------------------------------------------------------------------


class _Job:
    """Engine-side state of one job (touched only by the engine thread once submitted)."""

    __slots__ = (
        "handle",
        "prompt_ids",
        "prompt_len",
        "reserve",
        "monitor",
        "processors",
        "deadline",
        "timeout",
        "row",
        "prefilled",
        "cached",
        "started",
        "done",
    )

    def __init__(
        self,
        handle: EngineHandle,
        prompt_ids: list[int],
        monitor: CompletionMonitor,
        processors: list[Callable[[Any, torch.Tensor], torch.Tensor]],
        timeout: float | None,
    ) -> None:
        self.handle = handle
        self.prompt_ids = prompt_ids
        self.prompt_len = len(prompt_ids)
        self.reserve = self.prompt_len + handle.request.max_tokens
        self.monitor = monitor
        self.processors = processors  # empty: greedy
        self.timeout = timeout
        self.deadline = None if timeout is None else handle.submitted_at + timeout
        self.row = -1
        self.prefilled = 0  # prompt tokens processed
        self.cached = 0  # tokens in this job's KV row
        self.started = False  # should_stop() asked before the first prefill chunk
        self.done = False

    @property
    def decoding(self) -> bool:
        return self.prefilled == self.prompt_len and not self.done


class BatchingEngine:
    """Continuous batching over ``model.forward`` with a per-job-row KV cache.

    ``max_batch_size`` caps the jobs in the running batch (the rest wait, in
    submission order). ``max_batch_tokens`` caps the tokens of one step
    (prefill chunk + one per decoding job; it must exceed max_batch_size).
    ``max_prefill_tokens`` caps the packed prefill forward on its own: larger
    packs use the matmuls a little better, but decoding jobs wait for the
    whole forward before their next token. ``max_cache_bytes`` bounds the KV
    cache: a job is admitted only if the cache could grow to hold every
    admitted job's prompt + max_tokens; it is released after
    ``idle_release_s`` seconds without work. ``on_dead(exc)`` is called (on
    the engine thread) if the engine crashes.

    Callbacks run on the engine thread, so a slow ``should_stop`` (e.g. a
    network round trip per call) slows every job in the batch: keep them
    cheap or rate-limit them.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch_size: int = 32,
        max_batch_tokens: int = 8192,
        max_prefill_tokens: int = 512,
        max_cache_bytes: int = 4 << 30,
        idle_release_s: float = 10.0,
        on_dead: Callable[[BaseException], None] | None = None,
        name: str | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_batch_tokens <= max_batch_size:
            raise ValueError("max_batch_tokens must exceed max_batch_size (one token per job)")
        if max_prefill_tokens < 1:
            raise ValueError("max_prefill_tokens must be at least 1")
        self.loaded = loaded
        self.name = name or loaded.name
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_prefill_tokens = max_prefill_tokens
        self.max_cache_bytes = max_cache_bytes
        self.idle_release_s = idle_release_s
        self._on_dead = on_dead

        model = loaded.model
        config = _text_config(model)
        attn_impl = getattr(config, "_attn_implementation", None) or "eager"
        if attn_impl not in ("sdpa", "eager"):
            # The engine's forwards use sdpa math; greedy output equals generate()'s
            # exactly when generate() uses sdpa too.
            raise ValueError(
                f"BatchingEngine supports the sdpa and eager attention implementations, "
                f"not {attn_impl!r}"
            )
        _register_engine_attention()
        self._attn_config = config
        self._no_mask = torch.ones((1, 1, 1, 1), dtype=torch.bool, device=loaded.device)
        layer_types = getattr(config, "layer_types", None) or []
        if any(kind != "full_attention" for kind in layer_types):
            raise ValueError("BatchingEngine supports models whose layers all use full attention")
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        self._cache = _SlotKVCache(
            num_layers=config.num_hidden_layers,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            dtype=loaded.dtype,
            device=loaded.device,
            max_rows=max_batch_size,
            max_length=loaded.context_window,
        )
        self._vocab_size = _vocab_size(model)
        self._eos_ids = eos_token_ids(loaded)
        self._decode_text = make_decoder(loaded)
        # generate() applies the checkpoint's repetition penalty; so does the engine.
        penalty = getattr(model.generation_config, "repetition_penalty", None)
        self._repetition_penalty = float(penalty) if penalty not in (None, 1, 1.0) else None
        self._warn_unsupported_generation_config(model.generation_config)

        self._cond = threading.Condition()
        self._state = "new"  # new -> running -> (stopping ->) stopped | dead
        self._drain = True
        self._stop_deadline: float | None = None
        self._dead_reason: str | None = None
        self._thread: threading.Thread | None = None
        self._incoming: deque[_Job] = deque()  # guarded by _cond
        # Engine-thread state.
        self._waiting: deque[_Job] = deque()
        self._rows: list[_Job] = []  # row r holds _rows[r]; decoding jobs first
        self._n_decoding = 0
        # Counters (written by the engine thread only).
        self._steps = 0
        self._prefill_forwards = 0
        self._decode_forwards = 0
        self._prompt_tokens = 0
        self._generated_tokens = 0
        self._finished = 0
        self._failed = 0

    @staticmethod
    def _warn_unsupported_generation_config(config: Any) -> None:
        # Logits processors generate() would build from a checkpoint's
        # generation_config with do_sample=False, that the engine does not apply.
        counts = ("no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "min_length")
        ids = (
            "min_new_tokens",
            "bad_words_ids",
            "suppress_tokens",
            "begin_suppress_tokens",
            "sequence_bias",
            "forced_bos_token_id",
            "forced_eos_token_id",
        )
        found = [key for key in counts if getattr(config, key, None)]
        found += [key for key in ids if getattr(config, key, None) is not None]
        if found:
            logger.warning(
                "engine ignores generation_config settings that generate() would apply",
                extra={"settings": found},
            )

    # Public surface.

    def start(self) -> None:
        """Start the engine thread. An engine runs once: after stop() make a new one."""
        with self._cond:
            if self._state != "new":
                raise RuntimeError(f"engine already started (state: {self._state})")
            self._state = "running"
            self._thread = threading.Thread(
                target=self._run, name=f"engine-{self.name}", daemon=True
            )
            self._thread.start()
        logger.info(
            "engine started",
            extra={
                "model": self.name,
                "max_batch_size": self.max_batch_size,
                "max_batch_tokens": self.max_batch_tokens,
            },
        )

    def submit(self, request: EngineRequest) -> EngineHandle:
        """Queue a job; it joins the running batch at the next step there is room.

        Raises InvalidGenerationRequest / PromptTooLongError for a request the
        engine cannot serve, EngineDeadError if the engine is not running.
        """
        prompt_ids, stops = _validate_request(request, self._vocab_size, self.loaded.context_window)
        reserve = len(prompt_ids) + request.max_tokens
        if self._cache.allocation_bytes(1, reserve) > self.max_cache_bytes:
            raise InvalidGenerationRequest(
                f"prompt plus max_tokens ({reserve} tokens) needs more KV cache than this "
                f"engine may use ({self.max_cache_bytes} bytes); lower max_tokens"
            )
        handle = EngineHandle(request, len(prompt_ids), self._wake)
        generator = None
        if request.temperature > 0:
            generator = seeded_generator(self.loaded.device, request.seed)
        monitor = CompletionMonitor(
            decode=self._decode_text,
            prompt_tokens=len(prompt_ids),
            max_tokens=request.max_tokens,
            eos_ids=self._eos_ids,
            stop=stops,
            on_text=request.on_text,
            should_stop=request.should_stop,
        )
        processors = (
            sampling_processors(request.temperature, request.top_p, generator)
            if generator is not None
            else []
        )
        job = _Job(handle, prompt_ids, monitor, processors, request.timeout)
        with self._cond:
            if self._state != "running":
                raise EngineDeadError(self._not_running_reason())
            self._incoming.append(job)
            self._cond.notify()
        return handle

    def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop the engine and wait for its thread to exit. Idempotent.

        New submissions are refused at once. With ``drain`` the jobs already
        submitted (running or waiting) are finished first; if ``timeout``
        seconds pass before that, the rest fail with EngineDeadError. Without
        ``drain`` they fail at once (at the end of the current step).
        """
        with self._cond:
            if self._state == "new":
                self._state = "stopped"
                return
            if self._state == "running":
                self._state = "stopping"
                self._drain = drain
                self._stop_deadline = None if timeout is None else time.monotonic() + timeout
            elif self._state == "stopping" and not drain:
                self._drain = False
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    @property
    def alive(self) -> bool:
        """True while the engine thread runs and takes (or drains) jobs."""
        thread = self._thread
        return self._state in ("running", "stopping") and thread is not None and thread.is_alive()

    @property
    def dead_reason(self) -> str | None:
        """Why the engine crashed; None unless it did."""
        return self._dead_reason if self._state == "dead" else None

    @property
    def stats(self) -> EngineStats:
        decoding = self._n_decoding
        batch = len(self._rows)
        return EngineStats(
            alive=self.alive,
            batch_size=batch,
            decoding=decoding,
            prefilling=batch - decoding,
            waiting=len(self._waiting) + len(self._incoming),
            steps=self._steps,
            prefill_forwards=self._prefill_forwards,
            decode_forwards=self._decode_forwards,
            prompt_tokens=self._prompt_tokens,
            generated_tokens=self._generated_tokens,
            jobs_finished=self._finished,
            jobs_failed=self._failed,
            kv_cache_bytes=self._cache.nbytes,
        )

    def __enter__(self) -> BatchingEngine:
        if self._state == "new":
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Engine thread.

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _not_running_reason(self) -> str:
        if self._state == "dead":
            return self._dead_reason or "engine crashed"
        if self._state == "new":
            return "engine not started"
        return "engine is stopped"

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while self._iterate():
                    pass
        except BaseException as exc:  # the thread must never die silently
            self._die(exc)
        else:
            with self._cond:
                self._state = "stopped"
            logger.info("engine stopped", extra={"model": self.name})
        finally:
            self._cache.release()

    def _iterate(self) -> bool:
        """One engine step; returns False when the engine should exit."""
        with self._cond:
            while True:
                self._waiting.extend(self._incoming)
                self._incoming.clear()
                if self._state == "stopping":
                    expired = (
                        self._stop_deadline is not None and time.monotonic() >= self._stop_deadline
                    )
                    if not self._drain or expired:
                        abandoned = self._abandon_all()
                        break
                    if not self._waiting and not self._rows:
                        return False
                if self._waiting or self._rows:
                    abandoned = None
                    break
                if self._cache.nbytes:
                    # Idle: keep the cache for the next burst a while, then give
                    # the memory back.
                    if not self._cond.wait(timeout=self.idle_release_s):
                        if not (self._incoming or self._waiting or self._rows):
                            self._cache.release()
                    continue
                self._cond.wait()
        if abandoned is not None:
            error = EngineDeadError("engine stopped before the job finished")
            for job in abandoned:
                self._fail(job, error)
            return False

        self._reap()
        self._compact()
        self._admit()
        worked = self._step()
        if worked:
            self._steps += 1
        self._compact()
        return True

    def _abandon_all(self) -> list[_Job]:
        jobs = [*self._rows, *self._waiting, *self._incoming]
        self._rows, self._n_decoding = [], 0
        self._waiting.clear()
        self._incoming.clear()
        return [job for job in jobs if not job.done]

    def _die(self, exc: BaseException) -> None:
        reason = f"engine crashed: {type(exc).__name__}: {exc}"
        try:
            logger.error("engine crashed", exc_info=exc, extra={"model": self.name})
        except Exception:  # logging must not stop the clean-up
            pass
        with self._cond:
            self._state = "dead"
            self._dead_reason = reason
            jobs = self._abandon_all()
        for job in jobs:
            error = EngineDeadError(reason)
            error.__cause__ = exc
            self._fail(job, error)
        if self._on_dead is not None:
            try:
                self._on_dead(exc)
            except Exception:
                logger.exception("engine on_dead callback failed")

    # Job outcomes.

    def _finish(self, job: _Job) -> None:
        job.done = True
        if job.handle._resolve(result=job.monitor.result()):
            self._finished += 1

    def _fail(self, job: _Job, error: BaseException) -> None:
        job.done = True
        if job.handle._resolve(error=error):
            self._failed += 1

    def _timeout(self, job: _Job) -> None:
        monitor = job.monitor
        partial = GenerationResult(
            text=monitor.emitted,
            prompt_tokens=job.prompt_len,
            completion_tokens=len(monitor.ids),
            finish_reason="cancelled",
        )
        assert job.timeout is not None
        self._fail(job, JobTimeoutError(job.timeout, partial))

    def _cancel(self, job: _Job) -> None:
        try:
            job.monitor.cancel()  # may flush held-back text through on_text
        except Exception as exc:  # a callback's error fails its job only
            self._fail(job, exc)
            return
        self._finish(job)

    def _reap(self) -> None:
        """End jobs that were cancelled or timed out (queued ones included)."""
        now = time.monotonic()
        for job in [*self._waiting, *self._rows]:
            if job.done:
                continue
            if job.handle.cancel_requested:
                self._cancel(job)
            elif job.deadline is not None and now >= job.deadline:
                self._timeout(job)
        if any(job.done for job in self._waiting):
            self._waiting = deque(job for job in self._waiting if not job.done)

    # Scheduling.

    def _admit(self) -> None:
        while self._waiting and len(self._rows) < self.max_batch_size:
            job = self._waiting[0]
            longest = max([job.reserve, *(other.reserve for other in self._rows)])
            needed = self._cache.allocation_bytes(len(self._rows) + 1, longest)
            if self._rows and needed > self.max_cache_bytes:
                break  # wait for running jobs to leave; keeps FIFO order
            self._waiting.popleft()
            job.row = len(self._rows)
            self._rows.append(job)

    def _step(self) -> bool:
        decoding = self._rows[: self._n_decoding]
        budget = min(self.max_batch_tokens - len(decoding), self.max_prefill_tokens)
        segments: list[tuple[_Job, int, int]] = []
        for job in self._rows[self._n_decoding :]:
            if budget <= 0:
                break
            if job.done:
                continue
            if not job.started:
                job.started = True
                try:
                    cancelled = job.monitor.cancelled_before_start()
                except Exception as exc:
                    self._fail(job, exc)
                    continue
                if cancelled:
                    self._finish(job)
                    continue
            length = min(job.prompt_len - job.prefilled, budget)
            segments.append((job, job.prefilled, length))
            budget -= length
        if not segments and not decoding:
            return False

        longest = max(
            [job.cached + 1 for job in decoding] + [start + n for _, start, n in segments]
        )
        self._cache.ensure(
            len(self._rows),
            longest,
            live_rows=len(self._rows),
            length_limit=max(job.reserve for job in self._rows),
        )
        with self.loaded.lock:
            if segments:
                self._prefill(segments)
            if decoding:
                self._decode_step(decoding)
        return True

    def _forward(self, plan: _Plan, **kwargs: Any) -> torch.Tensor:
        """Run the model with the engine's cache and attention for this plan."""
        config = self._attn_config
        original = config._attn_implementation_internal
        self._cache.plan = plan
        token = _active_plan.set(plan)
        # The switch is per forward and under the model's lock, which generate()
        # also holds while it runs, so other users of the model never see it.
        config._attn_implementation_internal = _ENGINE_ATTENTION
        try:
            output = self.loaded.model(cache=self._cache, use_cache=True, **kwargs)
        finally:
            config._attn_implementation_internal = original
            _active_plan.reset(token)
            self._cache.plan = None
        return output.logits

    def _prefill(self, segments: list[tuple[_Job, int, int]]) -> None:
        device = self.loaded.device
        ids: list[int] = []
        positions: list[int] = []
        layout: list[tuple[int, int, int, int]] = []
        keep: list[int] = []
        completing: list[_Job] = []
        for job, start, length in segments:
            offset = len(ids)
            ids.extend(job.prompt_ids[start : start + length])
            positions.extend(range(start, start + length))
            layout.append((job.row, start, length, offset))
            if start + length == job.prompt_len:
                keep.append(offset + length - 1)
                completing.append(job)
        single = len(segments) == 1
        plan = _Plan(
            cache=self._cache,
            decode=False,
            q_offset=segments[0][1] if single else 0,
            kv_len=segments[0][1] + len(ids) if single else len(ids),
            segments=layout,
        )
        logits = self._forward(
            plan,
            input_ids=torch.tensor([ids], device=device),
            position_ids=torch.tensor([positions], device=device),
            # Attention is computed per chunk by _engine_attention, which ignores
            # the model's mask; an empty 4D mask spares building a T x T one.
            attention_mask=self._no_mask,
            logits_to_keep=torch.tensor(keep, dtype=torch.long, device=device),
        )
        self._prefill_forwards += 1
        self._prompt_tokens += len(ids)
        for job, _, length in segments:
            job.prefilled += length
            job.cached += length
        if completing:
            tokens = self._sample(completing, logits[0].float())
            now = time.monotonic()
            for job, token in zip(completing, tokens, strict=True):
                job.handle.first_token_at = now
                self._accept(job, token)

    def _decode_step(self, jobs: list[_Job]) -> None:
        device = self.loaded.device
        positions = [job.cached for job in jobs]
        length = max(positions) + 1
        if self._cache.capacity <= _FULL_CAPACITY_RATIO * length:
            # Attend over the whole capacity: rows 0..n-1 of the buffer are then
            # one contiguous block, which the attention matmuls read in place
            # (a [:length] slice would be copied first, every layer, every step).
            length = self._cache.capacity
        mask = None
        if min(positions) != length - 1:  # rows of different lengths: mask the padding
            allowed = torch.arange(length)[None, :] <= torch.tensor(positions)[:, None]
            allowed = allowed[:, None, None, :].to(device)
            if self.loaded.dtype == torch.float32:
                mask = allowed  # for transformers' sdpa
            else:  # additive, for _gemv_attention
                mask = torch.zeros(allowed.shape, dtype=torch.float32, device=device)
                mask.masked_fill_(~allowed, float("-inf"))
        plan = _Plan(
            cache=self._cache,
            decode=True,
            q_offset=length - 1,
            kv_len=length,
            rows=len(jobs),
            row_index=torch.arange(len(jobs), device=device),
            pos_index=torch.tensor(positions, device=device),
            mask=mask,
        )
        logits = self._forward(
            plan,
            input_ids=torch.tensor([[job.monitor.ids[-1]] for job in jobs], device=device),
            position_ids=plan.pos_index[:, None],
            attention_mask=self._no_mask,
            logits_to_keep=1,
        )
        self._decode_forwards += 1
        for job in jobs:
            job.cached += 1
        tokens = self._sample(jobs, logits[:, -1].float())
        for job, token in zip(jobs, tokens, strict=True):
            self._accept(job, token)

    def _sample(self, jobs: list[_Job], logits: torch.Tensor) -> list[int]:
        """Next token per job from its float32 logits row, as generate() would pick it."""
        if self._repetition_penalty is not None:
            from transformers import RepetitionPenaltyLogitsProcessor

            penalty = RepetitionPenaltyLogitsProcessor(self._repetition_penalty)
            for index, job in enumerate(jobs):
                history = torch.tensor([job.prompt_ids + job.monitor.ids], device=logits.device)
                logits[index : index + 1] = penalty(history, logits[index : index + 1])
        tokens = logits.argmax(dim=-1).tolist()
        for index, job in enumerate(jobs):
            if job.processors:
                scores = logits[index : index + 1]
                for processor in job.processors:
                    scores = processor(None, scores)
                tokens[index] = int(scores.argmax(dim=-1))
        return tokens

    def _accept(self, job: _Job, token: int) -> None:
        self._generated_tokens += 1
        try:
            job.monitor.feed([token])
        except Exception as exc:  # a callback's error fails its job only
            self._fail(job, exc)
            return
        if job.monitor.finish_reason is not None:
            self._finish(job)

    def _compact(self) -> None:
        """Drop finished jobs from the batch; keep decoding jobs in rows 0..n-1."""
        if not any(job.done or job.decoding for job in self._rows[self._n_decoding :]) and not any(
            job.done for job in self._rows[: self._n_decoding]
        ):
            return
        decoding = [job for job in self._rows if job.decoding]
        prefilling = [job for job in self._rows if not job.done and not job.decoding]
        order = _fill_holes(decoding, prefilling)
        occupant: list[_Job | None] = list(self._rows)
        for target, job in enumerate(order):
            source = job.row
            if source == target:
                continue
            other = occupant[target]
            if other is not None and not other.done:
                self._cache.swap_rows(target, other.cached, source, job.cached)
                other.row = source
                occupant[source] = other
            else:
                self._cache.copy_row(source, target, job.cached)
                occupant[source] = None
            job.row = target
            occupant[target] = job
        self._rows = order
        self._n_decoding = len(decoding)


def _fill_holes(decoding: list[_Job], prefilling: list[_Job]) -> list[_Job]:
    """The new row order: decoding jobs in rows 0..n-1, then the prefilling ones.

    A job already in its band keeps its row; only jobs outside it move, into the holes. So a job
    that finishes costs one row move (the KV of every layer), not a shift of every job after it.
    """
    order: list[_Job | None] = [None] * (len(decoding) + len(prefilling))
    start = 0
    for band in (decoding, prefilling):
        end = start + len(band)
        movers = []
        for job in band:
            if start <= job.row < end:
                order[job.row] = job
            else:
                movers.append(job)
        holes = (row for row in range(start, end) if order[row] is None)
        for job, row in zip(movers, holes, strict=False):
            order[row] = job
        start = end
    return [job for job in order if job is not None]


# -- transformers' continuous batching, for comparison -----------------------------------------


class TransformersEngine:
    """The same surface over transformers' ContinuousBatchingManager (for comparison).

    Built with ``model.init_continuous_batching`` and a dispatcher thread that
    routes the manager's streamed outputs (one shared queue) to the jobs'
    CompletionMonitors, so streaming, stop strings, ``should_stop``,
    ``cancel()``, ``timeout``, per-job callback errors and crash reporting
    behave as in BatchingEngine (callbacks run on the dispatcher thread).

    Limitations found (transformers 5.24, CPU):

    - greedy vs sampling is one switch per manager (``do_sample``): every job
      must match it (others are rejected);
    - sampling draws from torch's process-global RNG with ``torch.multinomial``
      (and creating the manager calls ``torch.manual_seed``, reseeding the
      whole process), so a job's ``seed`` cannot be honoured (rejected);
      per-job temperature/top_p need ``per_request_processors`` and only
      exist if the manager's generation config has non-default values;
    - no stop strings or cancellation callback: stopping goes through
      ``cancel_request``, which lands a step or more later (those tokens are
      computed and discarded);
    - without flash attention (CPU) every forward attends all queries of the
      batch to all keys of the batch through one dense block-diagonal mask,
      so decode cost grows with batch size x total context: throughput falls
      at high concurrency;
    - the KV cache defaults to 60% of free RAM (psutil needed); here it is
      sized by hand (``cache_tokens``); the manager thread is not a daemon,
      so ``stop()`` must be called.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch_size: int = 32,
        max_batch_tokens: int = 512,
        cache_tokens: int = 32 * 1024,
        page_size: int = 64,
        do_sample: bool = False,
        on_dead: Callable[[BaseException], None] | None = None,
    ) -> None:
        from transformers import ContinuousBatchingConfig, GenerationConfig

        self.loaded = loaded
        self.do_sample = do_sample
        self._on_dead = on_dead
        self._vocab_size = _vocab_size(loaded.model)
        self._eos_ids = eos_token_ids(loaded)
        self._decode_text = make_decoder(loaded)
        generation_config = GenerationConfig(
            do_sample=do_sample,
            # Non-default values make transformers build the per-request
            # temperature/top_p processors; jobs override them.
            temperature=0.99 if do_sample else None,
            top_p=0.999 if do_sample else None,
            max_new_tokens=256,
            eos_token_id=self._eos_ids or None,
            pad_token_id=loaded.tokenizer.pad_token_id,
        )
        cb_config = ContinuousBatchingConfig(
            page_size=page_size,
            num_blocks=max(1, math.ceil(cache_tokens / page_size)),
            max_batch_tokens=max_batch_tokens,
            max_requests_per_batch=max_batch_size,
            per_request_processors=do_sample,
            use_cuda_graph=False,
            use_async_batching=False,
            allow_block_sharing=False,
        )
        self._manager = loaded.model.init_continuous_batching(
            generation_config=generation_config, continuous_batching_config=cb_config
        )
        self._lock = threading.Lock()
        self._jobs: dict[str, _CBJob] = {}
        self._counter = 0
        self._state = "new"
        self._dead_reason: str | None = None
        self._dispatcher: threading.Thread | None = None

    def start(self) -> None:
        if self._state != "new":
            raise RuntimeError("engine already started")
        self._manager.start()
        self._state = "running"
        self._dispatcher = threading.Thread(target=self._dispatch, name="cb-dispatch", daemon=True)
        self._dispatcher.start()

    def submit(self, request: EngineRequest) -> EngineHandle:
        prompt_ids, stops = _validate_request(request, self._vocab_size, self.loaded.context_window)
        if (request.temperature > 0) != self.do_sample:
            mode = "sampling" if self.do_sample else "greedy"
            raise InvalidGenerationRequest(
                f"this TransformersEngine does {mode} decoding for every job (do_sample is "
                "per manager in transformers' continuous batching)"
            )
        if request.seed is not None:
            raise InvalidGenerationRequest(
                "TransformersEngine cannot seed one job: transformers' continuous batching "
                "samples from torch's global RNG"
            )
        handle = EngineHandle(request, len(prompt_ids), lambda: None)
        job = _CBJob(
            handle=handle,
            monitor=CompletionMonitor(
                decode=self._decode_text,
                prompt_tokens=len(prompt_ids),
                max_tokens=request.max_tokens,
                eos_ids=self._eos_ids,
                stop=stops,
                on_text=request.on_text,
                should_stop=request.should_stop,
            ),
            deadline=None
            if request.timeout is None
            else handle.submitted_at + float(request.timeout),
        )
        with self._lock:
            if self._state != "running":
                raise EngineDeadError(self._dead_reason or "engine is not running")
            self._counter += 1
            job.request_id = f"job-{self._counter}"
            self._jobs[job.request_id] = job
        try:
            if job.monitor.cancelled_before_start():
                self._settle(job, None)
                return handle
        except Exception as exc:
            self._settle(job, exc)
            return handle
        kwargs: dict[str, Any] = {}
        if self.do_sample:
            kwargs = {"temperature": float(request.temperature), "top_p": float(request.top_p)}
        added = self._manager.add_request(
            prompt_ids,
            request_id=job.request_id,
            max_new_tokens=request.max_tokens,
            streaming=True,
            eos_token_id=self._eos_ids or None,
            **kwargs,
        )
        if added is None:
            self._settle(job, EngineDeadError("transformers' manager refused the request"))
        return handle

    def _settle(self, job: _CBJob, error: BaseException | None) -> None:
        with self._lock:
            self._jobs.pop(job.request_id, None)
        if error is None:
            job.handle._resolve(result=job.monitor.result())
        else:
            job.handle._resolve(error=error)

    def _dispatch(self) -> None:
        """Route the manager's streamed outputs to jobs; check cancellation and timeouts."""
        from transformers.generation.continuous_batching.requests import RequestStatus

        manager = self._manager
        try:
            while True:
                output = manager.get_result(timeout=0.05)
                if output is not None:
                    with self._lock:
                        job = self._jobs.get(output.request_id)
                    if job is not None:
                        self._on_output(job, output, RequestStatus)
                self._check_jobs()
                fatal = manager.background_thread_status.fatal_error
                if fatal is not None or (output is None and not manager.is_running()):
                    if self._state == "running" or fatal is not None:
                        self._crashed(fatal or RuntimeError("generation thread exited"))
                    return
        except BaseException as exc:
            self._crashed(exc)

    def _on_output(self, job: _CBJob, output: Any, statuses: Any) -> None:
        if job.handle.done():
            return
        if output.status == statuses.FAILED:
            fatal = self._manager.background_thread_status.fatal_error
            error: BaseException = (
                EngineDeadError(f"engine crashed: {output.error}")
                if fatal is not None
                else GenerationError(output.error or "generation failed")
            )
            self._settle(job, error)
            return
        new = output.generated_tokens[job.seen :]
        job.seen = len(output.generated_tokens)
        if new and job.handle.first_token_at is None:
            job.handle.first_token_at = time.monotonic()
        try:
            for token in new:
                job.monitor.feed([int(token)])
                if job.monitor.finish_reason is not None:
                    break
            if job.monitor.finish_reason is None and output.is_finished():
                job.monitor.finish()
        except Exception as exc:
            self._manager.cancel_request(job.request_id)
            self._settle(job, exc)
            return
        if job.monitor.finish_reason is not None:
            if not output.is_finished():
                self._manager.cancel_request(job.request_id)
            self._settle(job, None)

    def _check_jobs(self) -> None:
        now = time.monotonic()
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if job.handle.cancel_requested:
                self._manager.cancel_request(job.request_id)
                try:
                    job.monitor.cancel()
                except Exception as exc:
                    self._settle(job, exc)
                    continue
                self._settle(job, None)
            elif job.deadline is not None and now >= job.deadline:
                self._manager.cancel_request(job.request_id)
                partial = GenerationResult(
                    text=job.monitor.emitted,
                    prompt_tokens=job.handle.prompt_tokens,
                    completion_tokens=len(job.monitor.ids),
                    finish_reason="cancelled",
                )
                timeout = float(job.handle.request.timeout or 0)
                self._settle(job, JobTimeoutError(timeout, partial))

    def _crashed(self, exc: BaseException) -> None:
        with self._lock:
            stopping = self._state != "running"
            self._state = "stopped" if stopping else "dead"
            reason = "engine stopped" if stopping else f"engine crashed: {exc}"
            self._dead_reason = None if stopping else reason
            jobs = list(self._jobs.values())
        for job in jobs:
            error = EngineDeadError(reason)
            error.__cause__ = exc
            self._settle(job, error)
        if not stopping and self._on_dead is not None:
            self._on_dead(exc)

    def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        with self._lock:
            if self._state == "new":
                self._state = "stopped"
                return
            if self._state == "running":
                self._state = "stopping"
        self._manager.stop(block=True, timeout=timeout, hard_stop=not drain)
        if self._dispatcher is not None:
            self._dispatcher.join(timeout=5)
        self._crashed(RuntimeError("engine stopped"))
        with self._lock:
            if self._state != "dead":
                self._state = "stopped"

    @property
    def alive(self) -> bool:
        return self._state in ("running", "stopping") and self._manager.is_running()

    @property
    def dead_reason(self) -> str | None:
        return self._dead_reason

    @property
    def stats(self) -> Mapping[str, Any]:
        with self._lock:
            in_flight = len(self._jobs)
        return {"alive": self.alive, "in_flight": in_flight}


@dataclass(eq=False)
class _CBJob:
    handle: EngineHandle
    monitor: CompletionMonitor
    deadline: float | None
    request_id: str = ""
    seen: int = 0
