"""The lean decode loop: continuous batching over a slot KV cache, one forward per new token.

`SlotCache` preallocates, per layer, keys and values for `num_slots` rows of `capacity` tokens
([R, H_kv, capacity, D]); a row's tokens sit at columns 0 .. length - 1 of its slot, so no row is padded
to another's length and nothing is copied as the cache grows (HF's DynamicCache concatenates every
layer's cache at every step). The active rows are always slots 0 .. A - 1: when rows finish, survivors
from the tail move into the holes (one copy of those rows), so every decode step is one forward over
exactly the unfinished rows, attending to columns 0 .. longest - 1 under an [A, 1, 1, W] length mask.
Free slots are refilled from the pending jobs in batches (when at least an eighth of the slots are free),
by a prefill forward over the distinct prompts of the admitted jobs: the n samples of a prompt share one
prefill, whose keys and values are copied into each of their slots.

The model must route attention through `past_key_values.update(key, value, layer_idx)` and accept a 4D
additive attention mask and explicit `position_ids` (transformers' Llama-style decoders do; checked on
the first forward); a model set to flash-attn runs the loop under sdpa (unmeasured: no GPU here). Draws
come from `sampling.Draw` with counter-based uniforms, so the tokens do not depend on the slot count or the
admission order.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from ibpo_fast.rollout.sampling import Draw, uniforms


class SlotCache:
    """Keys and values of `num_slots` rows; `update` writes the new tokens of rows 0 .. B - 1 at their
    lengths and returns those rows' keys and values up to `width` columns (HF's Cache protocol)."""

    def __init__(self, num_layers: int, num_slots: int, kv_heads: int, capacity: int, head_dim: int, *,
                 dtype: torch.dtype, device: torch.device):
        shape = (num_slots, kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.lengths = torch.zeros(num_slots, dtype=torch.int64, device=device)  # [R] tokens held
        self.width = 0  # columns the next decode step attends to

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Decode: key/value [B, H_kv, 1, D] of rows 0 .. B - 1, written at column `lengths[row]`."""
        rows = key.shape[0]
        slot, at = torch.arange(rows, device=key.device), self.lengths[:rows]
        self.keys[layer_idx][slot, :, at] = key[:, :, 0].to(self.keys[layer_idx].dtype)
        self.values[layer_idx][slot, :, at] = value[:, :, 0].to(self.values[layer_idx].dtype)
        return self.keys[layer_idx][:rows, :, :self.width], self.values[layer_idx][:rows, :, :self.width]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.width

    def move(self, source: torch.Tensor, target: torch.Tensor) -> None:
        """Copy slots `source` into slots `target` (index tensors of equal length)."""
        for cache in (*self.keys, *self.values):
            cache.index_copy_(0, target, cache.index_select(0, source))
        self.lengths.index_copy_(0, target, self.lengths.index_select(0, source))


class _Capture:
    """A prefill's cache: keeps each layer's keys and values and attends only to the prompt itself."""

    def __init__(self):
        self.keys, self.values = {}, {}

    def update(self, key, value, layer_idx, *args, **kwargs):
        self.keys[layer_idx], self.values[layer_idx] = key, value
        return key, value

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


@dataclass
class Job:
    """One sample to draw: its prompt and key, and the tokens drawn so far."""
    prompt: list[int]
    key: np.uint64
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


def kv_geometry(config) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of an HF decoder config (`models.kv_cache_bytes_per_token`'s)."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return config.num_hidden_layers, kv_heads, getattr(config, "head_dim", None) or config.hidden_size // heads


@contextmanager
def _mask_capable_attention(model):
    """sdpa for the loop when the model runs another attention (flash-attn takes no 4D mask), then back."""
    previous = model.config._attn_implementation
    if previous in ("sdpa", "eager"):
        yield
        return
    model.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


class DecodeLoop:
    """Draws every job to an eos id or `max_new_tokens` with at most `num_slots` rows in flight."""

    def __init__(self, model, *, num_slots: int, max_new_tokens: int, eos_ids: set[int], draw: Draw, pad_id: int):
        self.model, self.num_slots, self.max_new_tokens = model, num_slots, max_new_tokens
        self.eos_ids, self.draw, self.pad_id = eos_ids, draw, pad_id

    @torch.no_grad()
    def run(self, jobs: list[Job], progress=None) -> None:
        """Fills each job's tokens and logprobs in place; `progress(k)` is told of k finished jobs."""
        device_type = self.model.device.type
        # The dtype of the cache and the masks for this call: under autocast (bf16 compute over f32 master
        # weights) the projections come out in the autocast dtype (rotary embeddings may hand f32 keys
        # back: cast on write).
        self.dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else self.model.dtype
        with _mask_capable_attention(self.model):
            self._run(jobs, progress)

    def _run(self, jobs: list[Job], progress) -> None:
        num_slots = min(self.num_slots, len(jobs))
        capacity = max(len(job.prompt) for job in jobs) + self.max_new_tokens
        cache = SlotCache(*self._geometry(num_slots, capacity), dtype=self.dtype, device=self.model.device)
        slot_job: list[int] = []  # job index of each active slot
        pending, last = 0, torch.empty(0, dtype=torch.int64, device=self.model.device)  # [A] last tokens
        while pending < len(jobs) or slot_job:
            free = num_slots - len(slot_job)
            if pending < len(jobs) and (free >= max(1, num_slots // 8) or not slot_job):
                admitted = list(range(pending, min(len(jobs), pending + free)))
                last = torch.cat([last, self._prefill(cache, jobs, admitted, len(slot_job))])
                slot_job, pending = slot_job + admitted, admitted[-1] + 1
            last, slot_job, finished = self._step(cache, jobs, slot_job, last)
            if progress and finished:
                progress(finished)

    def _geometry(self, num_slots: int, capacity: int) -> tuple[int, int, int, int, int]:
        layers, kv_heads, head_dim = kv_geometry(self.model.config)
        return layers, num_slots, kv_heads, capacity, head_dim

    def _prefill(self, cache: SlotCache, jobs: list[Job], admitted: list[int], first_slot: int) -> torch.Tensor:
        """Prompts of the admitted jobs into slots first_slot.. (one prefill per distinct prompt, left
        padded); draws each job's first token. Returns those tokens [k]."""
        device = self.model.device
        prompts = list(dict.fromkeys(tuple(jobs[j].prompt) for j in admitted))
        which = [prompts.index(tuple(jobs[j].prompt)) for j in admitted]  # prompt of each admitted job
        width = max(map(len, prompts))
        pads = [width - len(p) for p in prompts]
        ids = torch.tensor([[self.pad_id] * pad + list(p) for p, pad in zip(prompts, pads)], device=device)
        column = torch.arange(width, device=device)
        starts = torch.tensor(pads, device=device)[:, None]  # [U, 1]
        causal = column[:, None] >= column[None, :]
        # Padding queries attend to themselves only: an all-masked row would give NaN in sdpa.
        mask = (causal[None] & (column >= starts)[:, None, :]) | torch.eye(width, dtype=torch.bool, device=device)
        capture = _Capture()
        logits = self.model(input_ids=ids, attention_mask=self._additive(mask[:, None]), past_key_values=capture,
                            position_ids=(column - starts).clamp(min=0), use_cache=True,
                            logits_to_keep=1).logits[:, -1]  # [U, V]
        if len(capture.keys) != len(cache.keys):
            raise ValueError(f"{type(self.model).__name__} does not route attention through past_key_values.update; "
                             "use the 'generate' engine")
        for u, pad in enumerate(pads):  # prompt u's real columns pad.. into columns 0.. of each of its slots
            slots = torch.tensor([first_slot + k for k, w in enumerate(which) if w == u], device=device)
            for store, new in ((cache.keys, capture.keys), (cache.values, capture.values)):
                for layer in range(len(store)):
                    store[layer][slots, :, :width - pad] = new[layer][u:u + 1, :, pad:].to(store[layer].dtype)
        lengths = torch.tensor([len(prompts[w]) for w in which], device=device)
        cache.lengths[first_slot:first_slot + len(admitted)] = lengths
        return self._record(jobs, admitted, logits[torch.tensor(which, device=device)])

    def _step(self, cache: SlotCache, jobs: list[Job], slot_job: list[int], last: torch.Tensor):
        """Retire the jobs that just ended, then one forward over the others. -> (last tokens, slot_job,
        number of jobs retired)."""
        done = [i for i, j in enumerate(slot_job) if jobs[j].tokens[-1] in self.eos_ids or
                len(jobs[j].tokens) >= self.max_new_tokens]
        if done:
            slot_job, last = self._retire(cache, slot_job, last, done)
        if not slot_job:
            return last, slot_job, len(done)
        active = len(slot_job)
        lengths = cache.lengths[:active]
        cache.width = int(lengths.max()) + 1
        mask = torch.arange(cache.width, device=last.device)[None, :] <= lengths[:, None]  # [A, W]
        logits = self.model(input_ids=last[:, None], attention_mask=self._additive(mask[:, None, None]),
                            position_ids=lengths[:, None], past_key_values=cache, use_cache=True)
        logits = logits.logits[:, -1]  # [A, V]
        cache.lengths[:active] += 1
        return self._record(jobs, slot_job, logits), slot_job, len(done)

    def _retire(self, cache: SlotCache, slot_job: list[int], last: torch.Tensor, done: list[int]):
        """Drop the `done` slots; the survivors past the new end move into the holes below it."""
        keep = len(slot_job) - len(done)
        holes = [i for i in done if i < keep]
        movers = sorted(set(range(keep, len(slot_job))) - set(done))
        if holes:
            source, target = (torch.tensor(x, device=last.device) for x in (movers, holes))
            cache.move(source, target)
            last = last.index_copy(0, target, last.index_select(0, source))
            for h, m in zip(holes, movers):
                slot_job[h] = slot_job[m]
        return slot_job[:keep], last[:keep]

    def _additive(self, mask: torch.Tensor) -> torch.Tensor:
        """A bool mask (True = attend) as the additive float mask that eager and sdpa attention both take."""
        return torch.zeros(mask.shape, dtype=self.dtype, device=mask.device).masked_fill_(
            ~mask, torch.finfo(self.dtype).min)

    def _record(self, jobs: list[Job], rows: list[int], logits: torch.Tensor) -> torch.Tensor:
        """Draw one token per row of `logits` for jobs `rows`; append it and its log-prob to each job."""
        keys = np.array([jobs[j].key for j in rows], np.uint64)
        positions = np.array([len(jobs[j].tokens) for j in rows], np.uint64)
        u = torch.as_tensor(uniforms(keys, positions), device=logits.device)
        token, logp = self.draw(logits, u)
        for j, t, lp in zip(rows, token.tolist(), logp.tolist()):
            jobs[j].tokens.append(t)
            jobs[j].logprobs.append(lp)
        return token
