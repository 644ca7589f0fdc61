"""The answers of one job: one engine request per choice (``n`` of them share the prompt's
prefill, ``engine.submit_choices``), each streamed as its own choice with its logprobs, through
its own plugin stages, and stored together when the job ends."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chat.models import ChatJob
from engine.request import EngineRequest
from engine.result import GenerationResult, TokenLogprob

from .answer_stages import AnswerPipeline
from .logprobs import formatter_for

if TYPE_CHECKING:
    from engine.registry import LoadedModel

    from .jobstreams import TokenPublisher


def printable(text: str) -> str:
    # A model can emit NUL, which PostgreSQL cannot store and JSON clients choke on.
    return text.replace("\x00", "")


def sampling_fields(params: dict[str, Any]) -> dict[str, Any]:
    """The job's parameters as the engine's request fields (vLLM's top_k -1 is "off", 0 here;
    logit_bias keys are JSON strings)."""
    bias = params.get("logit_bias")
    return {
        "temperature": params.get("temperature", 1.0),
        "top_p": params.get("top_p", 1.0),
        "top_k": max(params.get("top_k", 0), 0),
        "min_p": params.get("min_p", 0.0),
        "repetition_penalty": params.get("repetition_penalty"),
        "frequency_penalty": params.get("frequency_penalty", 0.0),
        "presence_penalty": params.get("presence_penalty", 0.0),
        "logit_bias": {int(token): value for token, value in bias.items()} if bias else None,
        "logprobs": (params.get("top_logprobs") or 0) if params.get("logprobs") else None,
        "grammar": params.get("grammar"),
        "stop": params.get("stop") or (),
    }


class ChoiceRun:
    """One choice of a job: its request's callbacks publish its text (through the plugins'
    stages) and its logprobs, which ride on the text that follows them."""

    def __init__(
        self, job: ChatJob, index: int, stream: TokenPublisher, loaded: LoadedModel
    ) -> None:
        self.job, self.index, self.stream = job, index, stream
        self.job_id = str(job.id)
        self.answer = AnswerPipeline(job)
        self.keeps_logprobs = bool(job.params.get("logprobs"))
        self._format = formatter_for(loaded.tokenizer)
        self._pending: list[dict] = []  # logprobs whose text has not gone out yet

    def request(
        self,
        prompt_ids: list[int],
        max_tokens: int,
        should_stop: Callable[[], bool],
        timeout: float,
    ) -> EngineRequest:
        fields = sampling_fields(self.job.params)
        seed = self.job.params.get("seed")
        return EngineRequest(
            prompt_ids=prompt_ids,
            max_tokens=max_tokens,
            # Several choices of one seed differ from each other, and are each reproducible.
            seed=None if seed is None else seed + self.index,
            on_text=lambda text: self.publish(self.answer.feed(text)),
            on_logprobs=self._took_logprobs if self.keeps_logprobs else None,
            should_stop=should_stop,
            timeout=timeout,
            # Each tenant's prompts warm only its own jobs' prefix cache.
            cache_salt=str(self.job.tenant_id),
            **fields,
        )

    def _took_logprobs(self, logprobs: list[TokenLogprob]) -> None:
        self._pending.extend(self._format.entries(logprobs))

    def publish(self, text: str) -> None:
        text = printable(text)
        if text or self._pending:
            logprobs = None
            if self.keeps_logprobs:
                logprobs, self._pending = self._pending, []
            self.stream.publish(self.job_id, text, self.index, logprobs)

    def finished(self, result: GenerationResult) -> GenerationResult:
        """The choice's result once its generation ended: what its stages still held goes out,
        and the text kept is theirs."""
        if self.answer.active:
            self.publish(self.answer.finish())
            result = dataclasses.replace(result, text=self.answer.text)
        elif self._pending:
            self.publish("")
        return result

    def stored(self, result: GenerationResult) -> dict:
        logprobs = self._format.entries(result.logprobs or ()) if self.keeps_logprobs else None
        return {
            "text": printable(result.text),
            "finish_reason": result.finish_reason,
            "logprobs": logprobs,
            "completion_tokens": result.completion_tokens,
        }


def combined(results: list[GenerationResult]) -> GenerationResult:
    """The job's result: its first choice's text and ending, every choice's tokens billed
    (the prompt once, as it was computed once)."""
    first = results[0]
    return dataclasses.replace(
        first, completion_tokens=sum(result.completion_tokens for result in results)
    )
