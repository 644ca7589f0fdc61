"""The baselines the engine is measured and tested against.

- :func:`generate`: one request at a time through ``model.generate`` (callers serialise on the
  model's lock), with the engine's own text handling (CompletionMonitor) and seeded sampling, so
  greedy output must equal the engine's token for token;
- :func:`generate_messages`: ``generate()``'s signature over an engine (chat template, submit,
  wait);
- :class:`TransformersEngine`: the engine's surface over transformers' own continuous batching
  (ContinuousBatchingManager).

Only the benchmark (bench/engine_bench.py) and the tests use them.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from engine.detokenizer import CompletionMonitor, eos_token_ids, make_decoder, request_monitor
from engine.errors import (
    EngineDeadError,
    GenerationError,
    InvalidGenerationRequest,
    JobTimeoutError,
)
from engine.registry import LoadedModel, vocab_size
from engine.request import (
    Engine,
    EngineHandle,
    EngineRequest,
    validate_prompt_fits,
    validate_request,
    validate_sampling,
    validate_stop,
)
from engine.result import GenerationResult
from engine.sampler import sampling_processors, seeded_generator
from workers.prompts import encode_prompt


def generate(
    loaded: LoadedModel,
    messages: list[dict],
    *,
    max_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: Sequence[str] = (),
    on_text: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> GenerationResult:
    """Produce the assistant's reply to a chat conversation.

    ``temperature == 0`` decodes greedily (deterministic); otherwise tokens are
    sampled with temperature and nucleus (top-p) filtering. A ``seed`` makes
    sampling reproducible for the same model, device and dtype, regardless of
    what other threads are doing. Blocks while another thread is generating
    with the same model.

    ``stop`` (a string or up to 4 of them) ends generation as soon as the
    completion contains one; the text is cut before its earliest occurrence.
    ``on_text`` is called with each new piece of text as it is generated (at
    most once per decode step, never with ""); the pieces concatenate to the
    returned ``text`` exactly. ``should_stop`` is asked once before the prompt
    is processed and once per decode step; when it returns True generation
    ends with finish_reason "cancelled" and the text so far. Both callbacks
    run on this thread while the model's lock is held, so they should be
    quick; an exception from either aborts generation and propagates.

    Raises PromptTooLongError if the prompt leaves no room for ``max_tokens``
    new tokens, InvalidGenerationRequest for malformed input.
    """
    validate_sampling(max_tokens, temperature, top_p)
    stops = validate_stop(stop)
    prompt_ids = encode_prompt(loaded, messages)
    prompt_tokens = len(prompt_ids)
    validate_prompt_fits(prompt_tokens, max_tokens, loaded.context_window)

    eos_ids = eos_token_ids(loaded)
    pad_id = loaded.tokenizer.pad_token_id
    if pad_id is None:
        pad_id = eos_ids[0] if eos_ids else 0

    from transformers import LogitsProcessorList, StoppingCriteriaList

    processors = LogitsProcessorList()
    if temperature > 0:
        generator = seeded_generator(loaded.device, seed)
        processors.extend(sampling_processors(temperature, top_p, generator))

    monitor = CompletionMonitor(
        decode=make_decoder(loaded),
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        eos_ids=eos_ids,
        stop=stops,
        on_text=on_text,
        should_stop=should_stop,
    )
    input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=loaded.device)
    with loaded.lock, torch.inference_mode():
        # A request cancelled while it waited for the lock skips the prefill.
        if not monitor.cancelled_before_start():
            loaded.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_tokens,
                # Always "greedy" from HF's point of view: when sampling, the
                # randomness comes from GumbelMaxSampler. Passing do_sample
                # explicitly also overrides a checkpoint's own sampling defaults
                # (temperature/top_k in generation_config.json), which the API's
                # parameters replace.
                do_sample=False,
                num_beams=1,
                eos_token_id=eos_ids or None,
                pad_token_id=pad_id,
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([monitor]),
            )
            monitor.finish()

    return monitor.result()


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
    """``generate()`` through an engine: chat template, submit, wait.

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
        self._vocab_size = vocab_size(loaded.model)
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
        prompt_ids, stops = validate_request(request, self._vocab_size, self.loaded.context_window)
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
            monitor=request_monitor(
                request,
                prompt_tokens=len(prompt_ids),
                stop=stops,
                decode=self._decode_text,
                eos_ids=self._eos_ids,
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
