"""The sampler: n responses per prompt from the current policy (an HF causal LM), with each sampled
token's log-prob, on a CPU or a GPU.

Two engines draw the same tokens (`sampling`: counter-based uniforms per sample and position, so the
draws do not depend on batching):

- "decode" (default): `decode.DecodeLoop`, continuous batching over a slot KV cache: finished rows leave
  the batch, free slots take the next jobs, the n samples of a prompt share one prefill, no row is padded
  to another's length. On the tiny preset's step 2.3-3.8x the tokens/s of `generate` at 64 rows a call
  (the former default), 1.1-1.4x on SmolLM2 (compute-bound on a CPU): benchmarks/README.md, train. On a GPU
  unmeasured.
- "generate": transformers' `model.generate` (left padding, every row kept to the longest) with the draw
  in a logits processor; the readable reference, and the fallback for a model whose attention does not go
  through `past_key_values.update`.

Rows in flight are sized by KV-cache memory: `kv_cache_gib` holds `rows` full rows of (longest prompt +
max_new_tokens) tokens at `models.kv_cache_bytes_per_token`.

Log-probs are `log_softmax(raw_logits / temperature)` at each sampled token, the quantity the trainer
recomputes, so |sampler - trainer| measures numerics alone. With top_p < 1 the draw is from the nucleus,
which these log-probs do not include.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from ibpo_fast import models  # a module reference: ibpo_fast.models imports rollout.formats
from ibpo_fast.rollout.decode import DecodeLoop, Job
from ibpo_fast.rollout.sampling import Draw, sample_keys, uniforms
from ibpo_fast.rollout.engines import ENGINES
from ibpo_fast.seeding import derive_seed



@dataclass(frozen=True)
class Rollout:
    prompt_index: int  # which prompt of the `generate` call
    prompt_ids: list[int]
    response_ids: list[int]  # cut after the first eos, which is kept as the last learned token
    text: str  # the response decoded without special tokens
    logprobs: np.ndarray  # [len(response_ids)] float32, sampled tokens under the sampler, all <= 0
    truncated: bool  # ended at max_new_tokens without eos


def _check_sampling(max_new_tokens: int, temperature: float, top_p: float, kv_cache_gib: float, engine: str) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not kv_cache_gib > 0:
        raise ValueError(f"kv_cache_gib must be > 0, got {kv_cache_gib}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")


def _prompt_seeds(seed: int | Sequence[int], num_prompts: int) -> list[int]:
    if isinstance(seed, (int, np.integer)):
        return [derive_seed(int(seed), i) for i in range(num_prompts)]
    if len(seed) != num_prompts:
        raise ValueError(f"seed: {len(seed)} seeds for {num_prompts} prompts")
    return list(seed)


def _cut_at_eos(ids: list[int], logprobs: np.ndarray, eos_ids: set[int]) -> tuple[list[int], np.ndarray, bool]:
    for i, token in enumerate(ids):
        if token in eos_ids:
            return ids[: i + 1], logprobs[: i + 1], False
    return ids, logprobs, True


class HFSampler:
    def __init__(self, model, tokenizer, *, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 kv_cache_gib: float, engine: str = "decode", progress: bool = True):
        _check_sampling(max_new_tokens, temperature, top_p, kv_cache_gib, engine)
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("tokenizer needs pad and eos tokens")
        self.model, self.tokenizer, self.engine, self.progress = model, tokenizer, engine, progress
        self.max_new_tokens, self.kv_cache_gib = max_new_tokens, kv_cache_gib
        self.draw = Draw(temperature, top_p)
        # Chat models may stop on several ids (e.g. end-of-turn and end-of-text).
        eos = model.generation_config.eos_token_id
        self.eos_ids = {tokenizer.eos_token_id} | set(eos if isinstance(eos, list) else [] if eos is None else [eos])

    def rows_in_flight(self, prompt_tokens: int) -> int:
        """Rows of `prompt_tokens` + max_new_tokens tokens whose KV cache fits in `kv_cache_gib`."""
        per_token = models.kv_cache_bytes_per_token(self.model.config, self.model.dtype)
        row_bytes = per_token * (prompt_tokens + self.max_new_tokens)
        rows = int(self.kv_cache_gib * 2**30 // row_bytes)
        if rows < 1:
            raise ValueError(f"kv_cache_gib={self.kv_cache_gib} holds no row of {prompt_tokens} + "
                             f"{self.max_new_tokens} tokens ({row_bytes / 2**30:.3g} GiB each)")
        return rows

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], n: int, seed: int | Sequence[int]) -> list[Rollout]:
        """n samples of every prompt, in prompt order (prompt 0's n samples first). `seed`: one seed per
        prompt, or an int (prompt i then has seed `derive_seed(seed, i)`). A sample's tokens depend only on
        its prompt, its prompt's seed, its index j < n and the model: not on the other prompts, the
        engine or the KV budget. The caller's RNG is untouched (nothing here draws from it)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not prompt_ids or any(len(ids) == 0 for ids in prompt_ids):
            raise ValueError("prompt_ids: needs at least one prompt, each of at least one token")
        keys = sample_keys(_prompt_seeds(seed, len(prompt_ids)), n)
        jobs = [Job(prompt_ids[i // n], keys[i]) for i in range(len(keys))]
        rows = self.rows_in_flight(max(map(len, prompt_ids)))
        with tqdm(total=len(jobs), desc="generate", disable=not self.progress) as bar:
            if self.engine == "decode":
                loop = DecodeLoop(self.model, num_slots=rows, max_new_tokens=self.max_new_tokens, eos_ids=self.eos_ids,
                                  draw=self.draw, pad_id=self.tokenizer.pad_token_id)
                loop.run(jobs, progress=bar.update)
            else:
                for start in range(0, len(jobs), rows):
                    self._generate_batch(jobs[start:start + rows])
                    bar.update(len(jobs[start:start + rows]))
        return [self._rollout(i // n, job) for i, job in enumerate(jobs)]

    def _rollout(self, prompt_index: int, job: Job) -> Rollout:
        ids, lp, truncated = _cut_at_eos(job.tokens, np.asarray(job.logprobs, np.float32), self.eos_ids)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Rollout(prompt_index, list(job.prompt), ids, text, lp, truncated)

    def _generate_batch(self, jobs: list[Job]) -> None:
        device = self.model.device
        width = max(len(job.prompt) for job in jobs)
        pad = self.tokenizer.pad_token_id
        pads = [width - len(j.prompt) for j in jobs]
        input_ids = torch.tensor([[pad] * n + j.prompt for n, j in zip(pads, jobs)], device=device)
        attention_mask = torch.tensor([[0] * n + [1] * len(j.prompt) for n, j in zip(pads, jobs)], device=device)
        draw = _DrawProcessor(self.draw, np.array([j.key for j in jobs], np.uint64), width)
        # Greedy decoding over the processor's one-hot scores is exactly the processor's draw.
        sequences = self.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, do_sample=False, temperature=None, top_p=None,
            top_k=None, max_new_tokens=self.max_new_tokens, pad_token_id=pad, eos_token_id=sorted(self.eos_ids),
            logits_processor=LogitsProcessorList([draw]), use_cache=True,
        )
        new_tokens = sequences[:, width:].tolist()  # [B, S]
        logprobs = torch.stack(draw.logprobs, dim=1).tolist()  # [B, S]
        for job, ids, lp in zip(jobs, new_tokens, logprobs):
            job.tokens, job.logprobs = ids, lp


class _DrawProcessor(LogitsProcessor):
    """`Draw` inside `generate`: scores 0 at the drawn token and -inf elsewhere; the drawn tokens'
    log-probs appended to `logprobs`. Row b is the sample of key `keys[b]`, at position len - width."""

    def __init__(self, draw: Draw, keys: np.ndarray, width: int):
        self.draw, self.keys, self.width = draw, keys, width
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        u = torch.as_tensor(uniforms(self.keys, input_ids.shape[1] - self.width), device=scores.device)
        token, logp = self.draw(scores, u)
        self.logprobs.append(logp)
        return torch.full_like(scores, float("-inf")).scatter_(1, token[:, None], 0.0)
