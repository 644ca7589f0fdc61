"""Which sequences run, and which tokens each computes, step by step. No torch here.

Each step the scheduler ends the sequences that were cancelled or ran past
their ``timeout`` (queued ones included), admits waiting sequences into the
batch in submission order while it has fewer than ``max_batch_size`` and the
KV cache budget (``max_cache_bytes``) allows, and plans the step's tokens per
sequence: one token for every sequence past its prompt, and prompt chunks for
the others, packed into one forward. Long prompts are split into chunks, so a
step never computes more than ``max_batch_tokens`` tokens (prefill chunks +
one per decoding sequence) and a long prompt cannot stall decoding sequences
for long. After the forwards it takes in each sequence's sampled token (text,
stop strings, ``should_stop``, end-of-turn, max_tokens: the sequence's
CompletionMonitor decides), and finished sequences leave the batch at once.

The KV cache is a collaborator (:class:`KVRows`): the scheduler reserves room
in it for each step and keeps decoding sequences in its rows ``0..n-1``,
moving as few rows as it can when sequences leave. So is the prefix cache
(:class:`PrefixRows`): an admitted sequence starts from its longest cached
prefix, and a sequence's blocks are kept when its prompt is processed and
when it ends.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from engine.errors import JobTimeoutError
from engine.result import GenerationResult

if TYPE_CHECKING:
    from engine.sequence import Sequence


class KVRows(Protocol):
    """What the scheduler needs of the KV cache: its sizing, growth and row moves."""

    def allocation_bytes(self, rows: int, length: int) -> int: ...

    def ensure(self, rows: int, length: int, live_rows: int, length_limit: int) -> None: ...

    def copy_row(self, src: int, dst: int, length: int) -> None: ...

    def swap_rows(self, a: int, a_len: int, b: int, b_len: int) -> None: ...


class PrefixRows(Protocol):
    """What the scheduler needs of the prefix cache (engine/prefix_cache.py)."""

    block_tokens: int

    def lookup(self, tokens: list[int], salt: str, limit: int) -> list[int]: ...

    def load(self, row: int, slots: list[int]) -> None: ...

    def store(self, row: int, tokens: list[int], salt: str) -> None: ...


@dataclass(slots=True)
class StepPlan:
    """The tokens of one step: prompt chunks, and one token for each decoding sequence."""

    # (sequence, first prompt position, tokens); packed into one forward.
    prefill: list[tuple[Sequence, int, int]]
    # The sequences in rows 0..len-1, each computing its last generated token.
    decode: list[Sequence]
    # Siblings that share the prefill of a sequence whose prompt this step completes (n > 1).
    forks: dict[Sequence, list[Sequence]] = dataclasses.field(default_factory=dict)


class Scheduler:
    """The batch: waiting sequences, and the running ones by KV row (decoding ones first).

    Touched by the engine thread only (other threads may read the sizes for
    stats). Finishing or failing a sequence resolves its handle, and counts.
    """

    def __init__(
        self,
        kv: KVRows,
        *,
        max_batch_size: int,
        max_batch_tokens: int,
        max_prefill_tokens: int,
        max_cache_bytes: int,
        prefix: PrefixRows | None = None,
    ) -> None:
        self._kv = kv
        self._prefix = prefix
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_prefill_tokens = max_prefill_tokens
        self.max_cache_bytes = max_cache_bytes
        self.waiting: deque[Sequence] = deque()
        self.rows: list[Sequence] = []  # row r holds rows[r]; decoding sequences first
        self.n_decoding = 0
        # Counters.
        self.generated_tokens = 0
        self.finished = 0  # with a result (stop, length, cancelled)
        self.failed = 0  # with an error (callback error, timeout, engine death)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.rows)

    def add(self, seqs: Iterable[Sequence]) -> None:
        """Queue new sequences, behind those already waiting."""
        self.waiting.extend(seqs)

    def abandon(self) -> list[Sequence]:
        """Empty the batch and the queue; return the sequences that had not ended."""
        seqs = [*self.rows, *self.waiting]
        self.rows, self.n_decoding = [], 0
        self.waiting.clear()
        return [seq for seq in seqs if not seq.done]

    # Outcomes.

    def finish(self, seq: Sequence) -> None:
        seq.done = True
        self._keep_prefix(seq)
        if seq.handle._resolve(result=_with_usage(seq.monitor.result(), seq)):
            self.finished += 1

    def fail(self, seq: Sequence, error: BaseException) -> None:
        seq.done = True
        if seq.handle._resolve(error=error):
            self.failed += 1

    def partial(self, seq: Sequence) -> GenerationResult:
        """What a job ended early produced: the text already streamed and the tokens to bill."""
        monitor = seq.monitor
        result = GenerationResult(
            text=monitor.emitted,
            prompt_tokens=seq.prompt_len,
            completion_tokens=len(monitor.ids),
            finish_reason="cancelled",
        )
        return _with_usage(result, seq)

    def _timeout(self, seq: Sequence) -> None:
        assert seq.timeout is not None
        self.fail(seq, JobTimeoutError(seq.timeout, self.partial(seq)))

    def _cancel(self, seq: Sequence) -> None:
        try:
            seq.monitor.cancel()  # may flush held-back text through on_text
        except Exception as exc:  # a callback's error fails its sequence only
            self.fail(seq, exc)
            return
        self.finish(seq)

    def _accept(self, seq: Sequence, token: int) -> None:
        self.generated_tokens += 1
        try:
            if seq.shaper is not None:  # its counts and grammar move on (a grammar may refuse)
                seq.shaper.accept(token)
            seq.report_logprobs()  # before the token's text goes out
            seq.monitor.feed([token])
        except Exception as exc:  # a callback's (or grammar's) error fails its sequence only
            self.fail(seq, exc)
            return
        if seq.monitor.finish_reason is not None:
            self.finish(seq)

    # Planning.

    def schedule(self, now: float) -> StepPlan | None:
        """Reap, admit, and plan this step (reserving its KV room); None: nothing to compute."""
        self._reap(now)
        self.compact()
        admitted = self._admit()
        if self._prefix is not None and admitted:
            self._reuse_prefixes(admitted)
        decoding = self.rows[: self.n_decoding]
        budget = min(self.max_batch_tokens - len(decoding), self.max_prefill_tokens)
        chunks: list[tuple[Sequence, int, int]] = []
        forks: dict[Sequence, list[Sequence]] = {}
        for seq in self.rows[self.n_decoding :]:
            if budget <= 0:
                break
            if seq.done or self._shares_prefill(seq):
                continue
            if not seq.started:
                seq.started = True
                try:
                    cancelled = seq.monitor.cancelled_before_start()
                except Exception as exc:
                    self.fail(seq, exc)
                    continue
                if cancelled:
                    self.finish(seq)
                    continue
            length = min(seq.prompt_len - seq.prefilled, budget)
            chunks.append((seq, seq.prefilled, length))
            budget -= length
            if seq.prefilled + length == seq.prompt_len and seq.siblings:
                joining = [sib for sib in seq.siblings if sib.parent is seq and sib.row >= 0]
                if joining:
                    forks[seq] = [sib for sib in joining if not sib.done]
        if not chunks and not decoding:
            return None

        longest = max([seq.cached + 1 for seq in decoding] + [start + n for _, start, n in chunks])
        self._kv.ensure(
            len(self.rows),
            longest,
            live_rows=len(self.rows),
            length_limit=max(seq.reserve for seq in self.rows),
        )
        return StepPlan(chunks, decoding, forks)

    @staticmethod
    def _shares_prefill(seq: Sequence) -> bool:
        """Whether a sibling choice waits for its first sibling's prefill, rather than run its
        own: only while that one is in the batch and has not finished it."""
        parent = seq.parent
        if parent is None:
            return False
        if not parent.done and parent.row >= 0 and parent.prefilled < parent.prompt_len:
            return True
        seq.parent = None  # the first one is gone, or done with its prompt: prefill alone
        return False

    def _reap(self, now: float) -> None:
        """End sequences that were cancelled or timed out (queued ones included)."""
        for seq in [*self.waiting, *self.rows]:
            if seq.done:
                continue
            if seq.handle.cancel_requested:
                self._cancel(seq)
            elif seq.deadline is not None and now >= seq.deadline:
                self._timeout(seq)
        if any(seq.done for seq in self.waiting):
            self.waiting = deque(seq for seq in self.waiting if not seq.done)

    def _admit(self) -> list[Sequence]:
        admitted = []
        while self.waiting and len(self.rows) < self.max_batch_size:
            seq = self.waiting[0]
            longest = max([seq.reserve, *(other.reserve for other in self.rows)])
            needed = self._kv.allocation_bytes(len(self.rows) + 1, longest)
            if self.rows and needed > self.max_cache_bytes:
                break  # wait for running sequences to leave; keeps FIFO order
            self.waiting.popleft()
            seq.handle.admitted_at = time.monotonic()
            seq.row = len(self.rows)
            self.rows.append(seq)
            admitted.append(seq)
        return admitted

    def _reuse_prefixes(self, admitted: list[Sequence]) -> None:
        """Start each admitted sequence from its longest cached prefix, leaving at least its
        prompt's last token to compute (its logits give the first new token). A sibling choice
        shares its first one's prefill instead."""
        prefix = self._prefix
        assert prefix is not None
        found = []
        for seq in admitted:
            if seq.parent is None and not seq.done:
                slots = prefix.lookup(seq.prompt_ids, seq.salt, seq.prompt_len - 1)
                if slots:
                    found.append((seq, slots))
        if not found:
            return
        longest = max(len(slots) for _, slots in found) * prefix.block_tokens
        self._kv.ensure(
            len(self.rows),
            longest,
            live_rows=len(self.rows),
            length_limit=max(seq.reserve for seq in self.rows),
        )
        for seq, slots in found:
            prefix.load(seq.row, slots)
            seq.prefilled = seq.cached = seq.reused = len(slots) * prefix.block_tokens

    def _keep_prefix(self, seq: Sequence) -> None:
        """Keep the blocks a sequence in the batch computed, before its row is reused."""
        if self._prefix is not None and seq.row >= 0 and seq.cached:
            self._prefix.store(seq.row, seq.computed_tokens(), seq.salt)

    # After the forwards.

    def postprocess_prefill(
        self,
        chunks: list[tuple[Sequence, int, int]],
        tokens: list[int],
        forks: dict[Sequence, list[Sequence]] | None = None,
    ) -> None:
        """Take in a prefill forward: ``tokens`` are the first of the chunks that end a prompt,
        each followed by those of its ``forks`` (which now get a copy of its KV)."""
        forks = forks or {}
        for seq, _, length in chunks:
            seq.prefilled += length
            seq.cached += length
            if seq.prefilled == seq.prompt_len:  # later prompts may share it while this one runs
                self._keep_prefix(seq)
            for sib in forks.get(seq, ()):
                self._kv.copy_row(seq.row, sib.row, seq.prompt_len)
                sib.prefilled = sib.cached = seq.prompt_len
                sib.started = True
                sib.parent = None
        if tokens:
            now = time.monotonic()
            completing = completing_sequences(chunks, forks)
            for seq, token in zip(completing, tokens, strict=True):
                seq.handle.first_token_at = now
                self._accept(seq, token)

    def postprocess_decode(self, seqs: list[Sequence], tokens: list[int]) -> None:
        """Take in a decode forward: one new token per sequence."""
        for seq, token in zip(seqs, tokens, strict=True):
            seq.cached += 1
            self._accept(seq, token)

    def compact(self) -> None:
        """Drop finished sequences from the batch; keep decoding ones in rows 0..n-1."""
        if not any(seq.done or seq.decoding for seq in self.rows[self.n_decoding :]) and not any(
            seq.done for seq in self.rows[: self.n_decoding]
        ):
            return
        decoding = [seq for seq in self.rows if seq.decoding]
        prefilling = [seq for seq in self.rows if not seq.done and not seq.decoding]
        order = _fill_holes(decoding, prefilling)
        occupant: list[Sequence | None] = list(self.rows)
        for target, seq in enumerate(order):
            source = seq.row
            if source == target:
                continue
            other = occupant[target]
            if other is not None and not other.done:
                self._kv.swap_rows(target, other.cached, source, seq.cached)
                other.row = source
                occupant[source] = other
            else:
                self._kv.copy_row(source, target, seq.cached)
                occupant[source] = None
            seq.row = target
            occupant[target] = seq
        self.rows = order
        self.n_decoding = len(decoding)


def completing_sequences(
    chunks: list[tuple[Sequence, int, int]], forks: dict[Sequence, list[Sequence]]
) -> list[Sequence]:
    """The sequences a prefill samples a first token for, in the order of its tokens: each whose
    prompt the chunk ends, then its forks."""
    completing = []
    for seq, start, length in chunks:
        if start + length == seq.prompt_len:
            completing.append(seq)
            completing.extend(forks.get(seq, ()))
    return completing


def _with_usage(result: GenerationResult, seq: Sequence) -> GenerationResult:
    """The monitor's result with what the sequence knows: its logprobs and cached tokens."""
    logprobs = None if seq.logprobs is None else tuple(seq.logprobs)
    if logprobs is None and not seq.reused:
        return result
    return dataclasses.replace(result, logprobs=logprobs, cached_tokens=seq.reused)


def _fill_holes(decoding: list[Sequence], prefilling: list[Sequence]) -> list[Sequence]:
    """The new row order: decoding sequences in rows 0..n-1, then the prefilling ones.

    A sequence already in its band keeps its row; only those outside it move, into the holes. So
    one that finishes costs one row move (the KV of every layer), not a shift of every one after it.
    """
    order: list[Sequence | None] = [None] * (len(decoding) + len(prefilling))
    start = 0
    for band in (decoding, prefilling):
        end = start + len(band)
        movers = []
        for seq in band:
            if start <= seq.row < end:
                order[seq.row] = seq
            else:
                movers.append(seq)
        holes = (row for row in range(start, end) if order[row] is None)
        for seq, row in zip(movers, holes, strict=False):
            order[row] = seq
        start = end
    return [seq for seq in order if seq is not None]
