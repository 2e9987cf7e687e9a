"""Samplers: n responses per prompt from the current policy, with the sampled tokens' log-probs.

`HFSampler` runs batched `model.generate` (left padding, sampling); it is the embedded default and runs
on a CPU. `VLLMSampler` has the same interface for GPU runs when vllm is installed (untested here: no
GPU in CI).

Log-probs are `log_softmax(raw_logits / temperature)` at each sampled token, the quantity the trainer
recomputes, so |sampler - trainer| measures numerics alone. With top_p < 1 the sampler actually draws
from a truncated distribution that these log-probs do not include.

HFSampler draws tokens itself, inside `generate`'s logits-processor hook, with the Gumbel-max trick
(argmax of log-probs plus Gumbel noise), and records each drawn token's log-prob at once: torch's CPU
`multinomial` over a large vocabulary was most of a step (230 ms of a 560 ms decode step at 256 x 32,000),
and keeping every step's logits for the log-probs held batch x new tokens x vocabulary floats.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList, TopPLogitsWarper

from ibpo_fast.seeding import derive_seed


@dataclass(frozen=True)
class Rollout:
    prompt_index: int  # which prompt of the `generate` call
    prompt_ids: list[int]
    response_ids: list[int]  # cut after the first eos, which is kept as the last learned token
    text: str  # the response decoded without special tokens
    logprobs: np.ndarray  # [len(response_ids)] float32, sampled tokens under the sampler, all <= 0
    truncated: bool  # ended at max_new_tokens without eos


def _check_sampling(max_new_tokens: int, temperature: float, top_p: float, batch_size: int) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _check_request(prompt_ids: list[list[int]], n: int) -> None:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if any(len(ids) == 0 for ids in prompt_ids):
        raise ValueError("prompt_ids: every prompt needs at least one token")


def _cut_at_eos(ids: list[int], logprobs: np.ndarray, eos_ids: set[int]) -> tuple[list[int], np.ndarray, bool]:
    for i, token in enumerate(ids):
        if token in eos_ids:
            return ids[: i + 1], logprobs[: i + 1], False
    return ids, logprobs, True


class HFSampler:
    def __init__(self, model, tokenizer, *, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 batch_size: int, progress: bool = True):
        _check_sampling(max_new_tokens, temperature, top_p, batch_size)
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("tokenizer needs pad and eos tokens")
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.batch_size, self.progress = batch_size, progress
        # Chat models may stop on several ids (e.g. end-of-turn and end-of-text).
        eos = model.generation_config.eos_token_id
        self.eos_ids = {tokenizer.eos_token_id} | set(eos if isinstance(eos, list) else [] if eos is None else [eos])

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], n: int, seed: int) -> list[Rollout]:
        """n samples of every prompt, in prompt order (prompt 0's n samples first). The same seed,
        prompts and batch_size give the same rollouts; the caller's torch RNG is left as it was."""
        _check_request(prompt_ids, n)
        jobs = [p for p in range(len(prompt_ids)) for _ in range(n)]
        starts = range(0, len(jobs), self.batch_size)
        rollouts: list[Rollout] = []
        # Sampling draws from the RNG of the model's device; fork it so the caller's stream is untouched.
        cuda_devices = [self.model.device] if self.model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            for batch_index, start in enumerate(tqdm(starts, desc="generate", disable=not self.progress)):
                torch.manual_seed(derive_seed(seed, batch_index))
                batch = jobs[start: start + self.batch_size]
                rollouts += self._generate_batch(batch, [prompt_ids[p] for p in batch])
        return rollouts

    def _generate_batch(self, prompt_indices: list[int], prompts: list[list[int]]) -> list[Rollout]:
        device = self.model.device
        width = max(map(len, prompts))
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        draw = GumbelSampler(self.temperature, self.top_p)
        # Greedy decoding over the processor's one-hot scores is exactly the processor's draw.
        sequences = self.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, do_sample=False, temperature=None, top_p=None,
            top_k=None, max_new_tokens=self.max_new_tokens, pad_token_id=pad, eos_token_id=sorted(self.eos_ids),
            logits_processor=LogitsProcessorList([draw]), use_cache=True,
        )
        new_tokens = sequences[:, width:].cpu()  # [B, S]
        logprobs = torch.stack(draw.logprobs, dim=1).cpu().numpy()  # [B, S]
        rollouts = []
        for row, (p, prompt) in enumerate(zip(prompt_indices, prompts)):
            ids, lp, truncated = _cut_at_eos(new_tokens[row].tolist(), logprobs[row], self.eos_ids)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            rollouts.append(Rollout(p, list(prompt), ids, text, lp.astype(np.float32), truncated))
        return rollouts


class GumbelSampler(LogitsProcessor):
    """One token per row from softmax(scores / temperature) (top-p truncated when top_p < 1), by the
    Gumbel-max trick: argmax(logp - log E) with E ~ Exp(1), drawn from torch's RNG on the scores' device.
    Returns scores that are 0 at the drawn token and -inf elsewhere; appends the drawn tokens' log-probs
    (of the untruncated distribution) to `logprobs`."""

    def __init__(self, temperature: float, top_p: float):
        self.temperature = temperature
        self.top_p = TopPLogitsWarper(top_p) if top_p < 1 else None
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        candidates = self.top_p(input_ids, logp) if self.top_p else logp
        token = (candidates - torch.empty_like(logp).exponential_().log_()).argmax(dim=-1, keepdim=True)
        self.logprobs.append(logp.gather(1, token).squeeze(1))
        return torch.full_like(scores, float("-inf")).scatter_(1, token, 0.0)


class VLLMSampler:
    """Same interface on vllm (`pip install 'ibpo_fast[vllm]'`), for a model saved at `model_path`.
    Untested here (no GPU); the trainer must push updated weights into `self.llm` between steps.
    `logprobs_mode="processed_logprobs"` makes vllm report log-probs after temperature (and top_p)."""

    def __init__(self, model_path: str, tokenizer, *, max_new_tokens: int, temperature: float = 1.0,
                 top_p: float = 1.0, progress: bool = True, **llm_options):
        _check_sampling(max_new_tokens, temperature, top_p, batch_size=1)  # vllm batches by itself
        try:
            import vllm
        except ImportError as e:
            raise ImportError("VLLMSampler needs vllm: pip install 'ibpo_fast[vllm]'") from e
        self._vllm, self.tokenizer, self.progress = vllm, tokenizer, progress
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.llm = vllm.LLM(model=model_path, logprobs_mode="processed_logprobs", **llm_options)

    def generate(self, prompt_ids: list[list[int]], n: int, seed: int) -> list[Rollout]:
        _check_request(prompt_ids, n)
        params = self._vllm.SamplingParams(n=n, temperature=self.temperature, top_p=self.top_p, seed=seed,
                                           max_tokens=self.max_new_tokens, logprobs=0)
        prompts = [self._vllm.TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=self.progress)
        rollouts = []
        for p, output in enumerate(outputs):
            for sample in output.outputs:
                ids = list(sample.token_ids)
                lp = np.array([step[t].logprob for step, t in zip(sample.logprobs, ids)], dtype=np.float32)
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                rollouts.append(Rollout(p, list(prompt_ids[p]), ids, text, lp, sample.finish_reason == "length"))
        return rollouts
