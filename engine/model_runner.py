"""The model's forwards for a planned step, and the tokens they sample.

A step runs at most two forwards, both over the slot KV cache with the
engine's attention: one *prefill* forward over the step's prompt chunks,
packed into one row (each chunk attends only to its own job), and one *decode*
forward, one new token for every sequence past its prompt, over KV rows
``0..n-1`` read in place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from engine.attention import EngineAttention
from engine.detokenizer import eos_token_ids
from engine.kv_cache import ForwardPlan, SlotKVCache
from engine.registry import text_config
from engine.sampler import Sampler
from engine.scheduler import completing_sequences

if TYPE_CHECKING:
    from engine.registry import LoadedModel
    from engine.sequence import Sequence


class ModelRunner:
    """Runs one model's forwards for the scheduler's plans; owns its KV cache.

    Raises UnsupportedModelError (a ValueError) for a model whose output it
    could not reproduce exactly (see :class:`~engine.attention.EngineAttention`).
    The caller holds the model's lock around the forwards.
    """

    def __init__(self, loaded: LoadedModel, *, max_rows: int) -> None:
        self.loaded = loaded
        model = loaded.model
        config = text_config(model)
        self._attention = EngineAttention(
            config, name=loaded.name, dtype=loaded.dtype, device=loaded.device
        )
        self._no_mask = torch.ones((1, 1, 1, 1), dtype=torch.bool, device=loaded.device)
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        self.cache = SlotKVCache(
            num_layers=config.num_hidden_layers,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            dtype=loaded.dtype,
            device=loaded.device,
            max_rows=max_rows,
            max_length=loaded.context_window,
        )
        self._sample = Sampler(model.generation_config, eos_token_ids(loaded))
        # Counters.
        self.prefill_forwards = 0
        self.decode_forwards = 0
        self.prompt_tokens = 0  # prompt tokens processed

    def _forward(self, plan: ForwardPlan, **kwargs: Any) -> torch.Tensor:
        """Run the model with the engine's cache and attention for this plan."""
        with self._attention(plan):
            output = self.loaded.model(cache=self.cache, use_cache=True, **kwargs)
        return output.logits

    def prefill(
        self,
        chunks: list[tuple[Sequence, int, int]],
        forks: dict[Sequence, list[Sequence]] | None = None,
    ) -> list[int]:
        """Process prompt chunks; return the first token of each chunk that ends its prompt,
        each followed by its forks' (sibling choices sampled from the same logits row)."""
        forks = forks or {}
        device = self.loaded.device
        ids: list[int] = []
        positions: list[int] = []
        layout: list[tuple[int, int, int, int]] = []
        keep: list[int] = []
        rows: list[int] = []  # per sampled sequence, its row among the kept logits
        for seq, start, length in chunks:
            offset = len(ids)
            ids.extend(seq.prompt_ids[start : start + length])
            positions.extend(range(start, start + length))
            layout.append((seq.row, start, length, offset))
            if start + length == seq.prompt_len:
                rows.extend([len(keep)] * (1 + len(forks.get(seq, ()))))
                keep.append(offset + length - 1)
        single = len(chunks) == 1
        plan = ForwardPlan(
            cache=self.cache,
            decode=False,
            q_offset=chunks[0][1] if single else 0,
            kv_len=chunks[0][1] + len(ids) if single else len(ids),
            segments=layout,
        )
        logits = self._forward(
            plan,
            input_ids=torch.tensor([ids], device=device),
            position_ids=torch.tensor([positions], device=device),
            # Attention is computed per chunk by the engine's attention, which ignores
            # the model's mask; an empty 4D mask spares building a T x T one.
            attention_mask=self._no_mask,
            logits_to_keep=torch.tensor(keep, dtype=torch.long, device=device),
        )
        self.prefill_forwards += 1
        self.prompt_tokens += len(ids)
        if not keep:
            return []
        kept = logits[0].float()
        if len(rows) > len(keep):  # forks: each its own copy of the row, shaped its own way
            kept = kept[torch.tensor(rows, device=device)]
        return self._sample(completing_sequences(chunks, forks), kept)

    def decode(self, seqs: list[Sequence]) -> list[int]:
        """One token for each sequence, in KV rows 0..len(seqs)-1: return the next ones."""
        device = self.loaded.device
        positions = [seq.cached for seq in seqs]
        # Attend over the live length only: rows 0..n-1 sliced to it are a strided view the
        # attention matmuls read in place (no copy), and every slot past it is work for nothing
        # (capacity runs up to the longest prompt + max_tokens admitted).
        length = max(positions) + 1
        plan = ForwardPlan(
            cache=self.cache,
            decode=True,
            q_offset=length - 1,
            kv_len=length,
            rows=len(seqs),
            row_index=torch.arange(len(seqs), device=device),
            pos_index=torch.tensor(positions, device=device),
            # The padding of shorter rows, and what each layer's window leaves out.
            masks=self._attention.decode_masks(positions, length),
        )
        logits = self._forward(
            plan,
            input_ids=torch.tensor([[seq.monitor.ids[-1]] for seq in seqs], device=device),
            position_ids=plan.pos_index[:, None],
            attention_mask=self._no_mask,
            logits_to_keep=1,
        )
        self.decode_forwards += 1
        return self._sample(seqs, logits[:, -1].float())
