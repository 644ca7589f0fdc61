"""Continuous batching: one engine thread serves many concurrent generation jobs on one model.

Jobs are submitted from any thread (:meth:`BatchingEngine.submit` returns an
:class:`~engine.request.EngineHandle` to wait on or cancel). A single engine
thread owns the model and repeats one *step*, which reads like nano-vllm's:

1. take in new submissions;
2. *plan* (:class:`~engine.scheduler.Scheduler`): end jobs that were
   cancelled (``handle.cancel()``) or ran past their ``timeout``, admit
   waiting jobs into the batch while it has fewer than ``max_batch_size``
   jobs and the KV cache budget (``max_cache_bytes``) allows, and give each
   job its tokens to compute: a prompt chunk, or one token once it decodes,
   never more than ``max_batch_tokens`` in all;
3. *run* (:class:`~engine.model_runner.ModelRunner`): one prefill forward
   over the prompt chunks, packed into one row, and one decode forward over
   the decoding jobs; per-job sampling (greedy, or seeded Gumbel-max sampling
   with the job's own temperature/top_p/generator, exactly as ``generate()``
   samples);
4. *post-process* (the scheduler again): per-job text handling with
   :class:`~engine.detokenizer.CompletionMonitor` (streaming deltas, stop
   strings, ``should_stop``, end-of-turn, max_tokens); finished jobs leave
   the batch.

So a job submitted while others generate joins the running batch at the next
step, and a finished job frees its place at once. The KV cache
(engine/kv_cache.py) holds one row per job in the batch; the attention
(engine/attention.py) lets any decoder-only model with full or sliding-window
attention run through its own ``forward``, with greedy output in float32
equal to generate()'s token for token; models it could not serve exactly are
refused when they load (engine/support.py).

Errors: a request that cannot be served (bad parameters, token ids outside the
vocabulary, prompt too long) is rejected by ``submit`` with a GenerationError.
An exception from a job's ``on_text``/``should_stop`` callback fails that job
only; its batch-mates carry on. Anything else that goes wrong on the engine
thread (a model forward raising, out of memory, a bug) is fatal: every
in-flight and queued job fails with :class:`~engine.errors.EngineDeadError`,
``alive`` becomes False, ``on_dead`` is called, and further submissions are
refused, so the worker can exit and be restarted rather than hang.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import torch

from engine.detokenizer import eos_token_ids, make_decoder, request_monitor
from engine.errors import EngineDeadError, InvalidGenerationRequest
from engine.logits import LogitsShaper
from engine.model_runner import ModelRunner
from engine.prefix_cache import PrefixCache
from engine.registry import LoadedModel, vocab_size
from engine.request import EngineHandle, EngineRequest, EngineStats, validate_request
from engine.sampler import sampling_processors, seeded_generator
from engine.scheduler import Scheduler
from engine.sequence import Sequence

logger = logging.getLogger(__name__)


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
    ``idle_release_s`` seconds without work. ``prefix_cache_bytes`` bounds the
    prefix cache (engine/prefix_cache.py; 0 turns it off): the KV of finished
    and running jobs' token blocks, which a later job with the same
    ``cache_salt`` and the same leading tokens reuses instead of prefilling
    them; it is kept while idle. ``on_dead(exc)`` is called (on the engine
    thread) if the engine crashes.

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
        prefix_cache_bytes: int = 1 << 30,
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
        self.prefix_cache_bytes = prefix_cache_bytes
        self.idle_release_s = idle_release_s
        self._on_dead = on_dead

        self._runner = ModelRunner(loaded, max_rows=max_batch_size)
        self._cache = self._runner.cache
        self._prefix = PrefixCache(self._cache, max_bytes=prefix_cache_bytes)
        self._scheduler = Scheduler(
            self._cache,
            max_batch_size=max_batch_size,
            max_batch_tokens=max_batch_tokens,
            max_prefill_tokens=max_prefill_tokens,
            max_cache_bytes=max_cache_bytes,
            prefix=self._prefix if self._prefix.enabled else None,
        )
        self._vocab_size = vocab_size(loaded.model)
        self._eos_ids = eos_token_ids(loaded)
        self._decode_text = make_decoder(loaded)

        self._cond = threading.Condition()
        self._state = "new"  # new -> running -> (stopping ->) stopped | dead
        self._drain = True
        self._stop_deadline: float | None = None
        self._dead_reason: str | None = None
        self._thread: threading.Thread | None = None
        self._incoming: deque[Sequence] = deque()  # guarded by _cond
        self._steps = 0  # written by the engine thread only

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
        return self.submit_choices([request])[0]

    def submit_choices(self, requests: list[EngineRequest]) -> list[EngineHandle]:
        """Queue several choices of one prompt (OpenAI's ``n``): the first one's prefill is
        shared, its KV copied to the others, which then each decode on their own, with their
        own parameters, callbacks and seed. All or none are queued."""
        if not requests:
            raise InvalidGenerationRequest("no request to submit")
        if any(list(r.prompt_ids) != list(requests[0].prompt_ids) for r in requests[1:]):
            raise InvalidGenerationRequest("the choices of one submission share one prompt")
        seqs = [self._sequence(request) for request in requests]
        first = seqs[0]
        first.siblings = seqs[1:]
        for sibling in first.siblings:
            sibling.parent = first
        with self._cond:
            if self._state != "running":
                raise EngineDeadError(self._not_running_reason())
            self._incoming.extend(seqs)
            self._cond.notify()
        return [seq.handle for seq in seqs]

    def _sequence(self, request: EngineRequest) -> Sequence:
        prompt_ids, stops = validate_request(request, self._vocab_size, self.loaded.context_window)
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
        monitor = request_monitor(
            request,
            prompt_tokens=len(prompt_ids),
            stop=stops,
            decode=self._decode_text,
            eos_ids=self._eos_ids,
        )
        processors = (
            sampling_processors(
                request.temperature,
                request.top_p,
                generator,
                top_k=request.top_k,
                min_p=request.min_p,
            )
            if generator is not None
            else []
        )
        shaper = self._shaper(request, prompt_ids)
        return Sequence(handle, prompt_ids, monitor, processors, request.timeout, shaper)

    def _shaper(self, request: EngineRequest, prompt_ids: list[int]) -> LogitsShaper:
        grammar = None
        if request.grammar is not None:
            from engine.grammar import grammar_constraint  # llguidance, only when asked for

            grammar = grammar_constraint(self.loaded, request.grammar)
        repetition = request.repetition_penalty
        if repetition is None:  # generate() applies the checkpoint's own
            repetition = getattr(self.loaded.model.generation_config, "repetition_penalty", None)
        return LogitsShaper(
            vocab=self._vocab_size,
            device=self.loaded.device,
            prompt_ids=prompt_ids,
            repetition_penalty=float(repetition) if repetition is not None else None,
            frequency_penalty=request.frequency_penalty,
            presence_penalty=request.presence_penalty,
            logit_bias=dict(request.logit_bias) if request.logit_bias else None,
            grammar=grammar,
        )

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
        scheduler, runner = self._scheduler, self._runner
        decoding = scheduler.n_decoding
        batch = len(scheduler.rows)
        return EngineStats(
            alive=self.alive,
            batch_size=batch,
            decoding=decoding,
            prefilling=batch - decoding,
            waiting=len(scheduler.waiting) + len(self._incoming),
            steps=self._steps,
            prefill_forwards=runner.prefill_forwards,
            decode_forwards=runner.decode_forwards,
            prompt_tokens=runner.prompt_tokens,
            generated_tokens=scheduler.generated_tokens,
            jobs_finished=scheduler.finished,
            jobs_failed=scheduler.failed,
            kv_cache_bytes=self._cache.nbytes,
            prefix_cache_queries=self._prefix.query_tokens,
            prefix_cache_hits=self._prefix.hit_tokens,
            prefix_cache_evictions=self._prefix.evictions,
            prefix_cache_bytes=self._prefix.nbytes,
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
            self._prefix.clear()

    def _iterate(self) -> bool:
        """One engine step; returns False when the engine should exit."""
        scheduler = self._scheduler
        with self._cond:
            while True:
                scheduler.add(self._incoming)
                self._incoming.clear()
                if self._state == "stopping":
                    expired = (
                        self._stop_deadline is not None and time.monotonic() >= self._stop_deadline
                    )
                    if not self._drain or expired:
                        abandoned = self._abandon_all()
                        break
                    if not scheduler.has_work:
                        return False
                if scheduler.has_work:
                    abandoned = None
                    break
                if self._cache.nbytes:
                    # Idle: keep the cache for the next burst a while, then give
                    # the memory back.
                    if not self._cond.wait(timeout=self.idle_release_s):
                        if not (self._incoming or scheduler.has_work):
                            self._cache.release()
                    continue
                self._cond.wait()
        if abandoned is not None:
            for seq in abandoned:
                reason = "engine stopped before the job finished"
                scheduler.fail(seq, EngineDeadError(reason, scheduler.partial(seq)))
            return False

        plan = scheduler.schedule(time.monotonic())
        if plan is not None:
            with self.loaded.lock:
                if plan.prefill:
                    tokens = self._runner.prefill(plan.prefill, plan.forks)
                    scheduler.postprocess_prefill(plan.prefill, tokens, plan.forks)
                if plan.decode:
                    scheduler.postprocess_decode(plan.decode, self._runner.decode(plan.decode))
            self._steps += 1
        scheduler.compact()  # finished jobs leave the batch at once
        return True

    def _abandon_all(self) -> list[Sequence]:
        seqs = [*self._scheduler.abandon(), *self._incoming]
        self._incoming.clear()
        return seqs

    def _die(self, exc: BaseException) -> None:
        reason = f"engine crashed: {type(exc).__name__}: {exc}"
        try:
            logger.error("engine crashed", exc_info=exc, extra={"model": self.name})
        except Exception:  # logging must not stop the clean-up
            pass
        with self._cond:
            self._state = "dead"
            self._dead_reason = reason
            seqs = self._abandon_all()
        for seq in seqs:
            error = EngineDeadError(reason, self._scheduler.partial(seq))
            error.__cause__ = exc
            self._scheduler.fail(seq, error)
        if self._on_dead is not None:
            try:
                self._on_dead(exc)
            except Exception:
                logger.exception("engine on_dead callback failed")
