"""What callers of an engine see: the request, its handle, the engine's stats (the result is in
engine/result.py, the errors in engine/errors.py).

Also the one validation of a request (:func:`validate_request`), which every engine runs in
``submit`` before a job is queued, so a request the engine cannot serve fails at once, in the
caller's thread, with a GenerationError.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.errors import InvalidGenerationRequest, PromptTooLongError
from engine.result import GenerationResult, TokenLogprob

# As in the OpenAI API; the web refuses more at the door with the same numbers
# (chat.sampling; tests/test_limits.py holds them equal).
MAX_STOP_SEQUENCES = 4
MAX_LOGIT_BIAS = 300
MAX_TOP_LOGPROBS = 20


@dataclass
class EngineRequest:
    """One generation job: a tokenized prompt and its sampling parameters.

    The parameters mean what they mean for ``generate()`` (bench/baselines.py):
    ``temperature == 0`` is greedy; ``seed`` makes sampling reproducible,
    whatever else is in the batch; ``stop`` is a string or up to 4 of them;
    ``on_text`` receives the streamed deltas and ``should_stop`` is asked
    once before the prompt is processed and once per generated token. Both
    callbacks run on the engine thread between forward passes, so they must
    be quick (every job in the batch waits for them). ``timeout`` (seconds,
    counted from submission) bounds the whole job, queueing included.

    The rest are OpenAI's and vLLM's (engine/logits.py, engine/sampler.py):
    ``top_k`` (0: off) and ``min_p`` filter what sampling draws from;
    ``repetition_penalty`` (None: the checkpoint's own, as ``generate()``),
    ``frequency_penalty``, ``presence_penalty`` and ``logit_bias`` (token id
    -> -100..100) shape the logits of greedy and sampled picks alike;
    ``logprobs`` (None: none; else how many top alternatives, 0..20) adds
    each token's logprob to the result, and hands them to ``on_logprobs``
    (engine thread, before the token's text goes to ``on_text``);
    ``grammar`` (an llguidance grammar, see engine/grammar.py) constrains
    the output to it. ``cache_salt`` scopes prefix caching (engine/prefix_cache.py): a job
    reuses only KV that jobs with the same salt computed (the worker gives each tenant its own).
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
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: Mapping[int, float] | None = None
    logprobs: int | None = None
    on_logprobs: Callable[[list[TokenLogprob]], None] | None = None
    grammar: str | None = None
    cache_salt: str = ""


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
    # Prefix caching: prompt tokens looked up and found, blocks evicted, bytes held.
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    prefix_cache_evictions: int = 0
    prefix_cache_bytes: int = 0


class EngineHandle:
    """A submitted job: wait for its result, or cancel it. Thread-safe."""

    def __init__(self, request: EngineRequest, prompt_tokens: int, wake: Callable[[], None]):
        self.request = request
        self.prompt_tokens = prompt_tokens
        # time.monotonic() stamps, for latency metrics (TTFT = first_token_at - submitted_at) and
        # the worker's trace spans: the wait for a place in the batch ends at admitted_at, the
        # prefill at first_token_at, the decode at finished_at.
        self.submitted_at = time.monotonic()
        self.admitted_at: float | None = None
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
    """What the worker (and bench's generate_messages) need from an engine."""

    def submit(self, request: EngineRequest) -> EngineHandle: ...

    def submit_choices(self, requests: list[EngineRequest]) -> list[EngineHandle]: ...


# -- validation --------------------------------------------------------------------------------


def validate_max_tokens(max_tokens: int) -> None:
    """Raise InvalidGenerationRequest unless ``max_tokens`` is a positive integer."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidGenerationRequest(f"max_tokens must be a positive integer, got {max_tokens!r}")


def validate_sampling(max_tokens: int, temperature: float, top_p: float) -> None:
    """Raise InvalidGenerationRequest unless the sampling parameters are usable."""
    validate_max_tokens(max_tokens)
    if not (math.isfinite(temperature) and temperature >= 0):
        raise InvalidGenerationRequest(f"temperature must be >= 0, got {temperature!r}")
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise InvalidGenerationRequest(f"top_p must be in (0, 1], got {top_p!r}")


def validate_stop(stop: str | Sequence[str]) -> tuple[str, ...]:
    """Normalise ``stop`` (a string or up to 4 of them) to a tuple of distinct strings."""
    # OpenAI accepts a bare string as well as a list of them; a str is also a
    # Sequence[str] of its characters, which is never what the caller means.
    if isinstance(stop, str):
        stop = (stop,)
    try:
        stops = tuple(stop)
    except TypeError:
        raise InvalidGenerationRequest("stop must be a string or a list of strings") from None
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidGenerationRequest(
            f"stop may hold at most {MAX_STOP_SEQUENCES} sequences, got {len(stops)}"
        )
    for index, value in enumerate(stops):
        if not isinstance(value, str) or not value:
            raise InvalidGenerationRequest(f"stop[{index}] must be a non-empty string")
    return tuple(dict.fromkeys(stops))


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int)


def validate_shaping(request: EngineRequest, vocab_size: int) -> None:
    """Raise InvalidGenerationRequest unless the filters, penalties, bias and logprobs are
    usable (the ranges are OpenAI's and vLLM's)."""
    if not _is_int(request.top_k) or request.top_k < 0:
        raise InvalidGenerationRequest(f"top_k must be an integer >= 0, got {request.top_k!r}")
    if not _is_number(request.min_p) or not 0 <= request.min_p <= 1:
        raise InvalidGenerationRequest(f"min_p must be in [0, 1], got {request.min_p!r}")
    penalty = request.repetition_penalty
    if penalty is not None and not (_is_number(penalty) and 0 < penalty <= 2):
        raise InvalidGenerationRequest(f"repetition_penalty must be in (0, 2], got {penalty!r}")
    for name in ("frequency_penalty", "presence_penalty"):
        value = getattr(request, name)
        if not _is_number(value) or not -2 <= value <= 2:
            raise InvalidGenerationRequest(f"{name} must be in [-2, 2], got {value!r}")
    bias = request.logit_bias
    if bias is not None:
        if not isinstance(bias, Mapping) or len(bias) > MAX_LOGIT_BIAS:
            raise InvalidGenerationRequest(
                f"logit_bias must map at most {MAX_LOGIT_BIAS} token ids to biases"
            )
        for token, value in bias.items():
            if not _is_int(token) or not 0 <= token < vocab_size:
                raise InvalidGenerationRequest(
                    f"logit_bias token ids must be in [0, {vocab_size}), got {token!r}"
                )
            if not _is_number(value) or not -100 <= value <= 100:
                raise InvalidGenerationRequest(
                    f"logit_bias values must be in [-100, 100], got {value!r}"
                )
    top = request.logprobs
    if top is not None and not (_is_int(top) and 0 <= top <= MAX_TOP_LOGPROBS):
        raise InvalidGenerationRequest(
            f"logprobs must be None or an integer in [0, {MAX_TOP_LOGPROBS}], got {top!r}"
        )
    grammar = request.grammar
    if grammar is not None and (not isinstance(grammar, str) or not grammar):
        raise InvalidGenerationRequest("grammar must be a non-empty string")


def validate_prompt_fits(prompt_tokens: int, max_tokens: int, context_window: int) -> None:
    """Raise PromptTooLongError unless the prompt leaves room for ``max_tokens`` new tokens."""
    if prompt_tokens > context_window - max_tokens:
        raise PromptTooLongError(prompt_tokens, max_tokens, context_window)


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


def validate_request(
    request: EngineRequest, vocab_size: int, context_window: int
) -> tuple[list[int], tuple[str, ...]]:
    """Check a request against the model; return its prompt ids and its stop strings.

    Raises InvalidGenerationRequest for malformed parameters or token ids
    outside the vocabulary, PromptTooLongError when prompt + max_tokens does
    not fit the context window.
    """
    prompt_ids = _validated_prompt(request.prompt_ids, vocab_size)
    validate_sampling(request.max_tokens, request.temperature, request.top_p)
    validate_shaping(request, vocab_size)
    stops = validate_stop(request.stop)
    validate_prompt_fits(len(prompt_ids), request.max_tokens, context_window)
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
    if not isinstance(request.cache_salt, str):
        raise InvalidGenerationRequest(f"cache_salt must be a string, got {request.cache_salt!r}")
    return prompt_ids, stops
