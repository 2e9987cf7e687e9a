"""One IBPO training step per budget q, phase by phase: the fused loss against the model's full-logits loss.

    python -m benchmarks train --out bench_out                 # CPU
    python -m benchmarks train --device cuda --out bench_out   # a larger batch on a GPU

Model: a random Llama with the tiny preset's body (``models.tiny_model``: hidden 64, 2 layers) and a
V = 32,000 head (``--vocab``), so the LM head is most of the update's flops, as in small real models with large
vocabularies; text goes through the char tokenizer (ids < 102). The step, built from the package's public
pieces and the trainer's ``Policy`` and ``optimizer_step`` (ibpo_fast/train):

- generate: ``HFSampler.generate`` of n responses for each of P arithmetic prompts by the random policy
  (``--max-new-tokens``, default 32). A random policy never answers right, so the ILP would select nothing:
  the responses graded and trained on are instead task demonstrations (``rollout.demonstration``, half regular,
  half sequential voting), a share of them answering another prompt's problem (wrong). Same P·n count.
- grade: ``Grader.score`` of those texts; group: ``grouping.response_groups`` of the texts, by the
  [TRIAL] marker; ilp: ``budget.solve(rewards, groups, prompts, q, max_per_prompt=1)``; pack: the selected
  responses into the update batch (T tokens).
- fwd+bwd: ``fused`` = the trainer's ``Policy`` (decoder body on sdpa rows of <= 2048 tokens with a
  block-diagonal mask, or one varlen row under flash-attn) + ``ops.sequence_logprobs_and_loss`` (backend
  "auto"); ``full`` = ``model(...).logits`` on the same rows → log_softmax → gather → the same per-sequence
  weighted loss (Z = counted tokens); then ``loss.backward()``. optimizer: the trainer's ``optimizer_step``
  (grad-norm clip 1.0, AdamW step, zero_grad).

Median over ``--repeats`` after one warm-up step. In each repeat the phases that depend on neither q nor the loss
(generate, grade, group) run once and their times serve every row; then, for each q in turn, ilp, pack and the
two updates (interleaved, so a slow spell of a shared machine hits all rows alike). `update_tok_s` =
T / (fwd+bwd + optimizer); `step_tok_s` = T / the whole step; `samples_s` = P·n / the whole step;
`peak_mib`: peak memory of the update (fwd+bwd + optimizer) above what was held before it. Rows `ratio` give
fused / full for the throughputs and full / fused for time, and `loss_rel_diff`, |fused − full| / |full| of
the loss on that batch (a check that both compute the same loss).
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import peak_memory, plot_lines, plots_available, save_partial, write_results
from ibpo_fast import budget, grouping
from ibpo_fast.models import char_tokenizer, encode_prompts, tiny_model
from ibpo_fast.packing import pack
from ibpo_fast.rollout import ArithmeticTask, Grader, HFSampler, demonstration, prompt_text
from ibpo_fast.train.policy import Policy, RowBatch, uses_flash_attention
from ibpo_fast.train.phases import optimizer_step

BUDGETS = (0.0, 0.25, 0.5, 0.75, 1.0)
ROLLOUT_PHASES = ("generate", "grade", "group", "ilp", "pack")
UPDATE_PHASES = ("fwd_bwd", "optimizer")
COLUMNS = ["q", "loss", "tokens", "selected", "extended", *(f"{p}_ms" for p in ROLLOUT_PHASES + UPDATE_PHASES),
           "step_ms", "update_tok_s", "step_tok_s", "samples_s", "peak_mib", "loss_rel_diff"]


class Timer:
    def __init__(self, device):
        self.device, self.ms = device, {}

    def __call__(self, phase, fn):
        if self.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.ms[phase] = 1e3 * (time.perf_counter() - start)
        return out


def make_rollouts(tokenizer, num_prompts, n, seed):
    """(problems, prompt ids, texts of P·n responses, prompt of each): demonstrations, some answering another
    prompt (so wrong); wrong more often for regular responses (one attempt) than for voting ones."""
    rng = random.Random(seed)
    problems = ArithmeticTask(levels=(1, 2, 3, 4)).problems("train", num_prompts, seed)
    prompt_ids = encode_prompts(tokenizer, [prompt_text(p, "asv") for p in problems], chat=False)
    texts, owners = [], []
    for p, problem in enumerate(problems):
        for j in range(n):
            fmt = "regular" if j % 2 == 0 else "sv"
            wrong = rng.random() < (0.2 + 0.15 * problem.level if fmt == "regular" else 0.1 * problem.level)
            answered = problems[(p + 1) % num_prompts] if wrong else problem
            texts.append(demonstration(answered, fmt, rng))
            owners.append(p)
    return problems, prompt_ids, texts, np.asarray(owners)


def normaliser(batch) -> torch.Tensor:
    """Z = sum_i |w_i| * (counted tokens of i), as ``normalize="tokens"`` computes it."""
    counted = ((batch.targets != -100) & batch.loss_mask).float()
    sequence = torch.repeat_interleave(torch.arange(batch.num_sequences, device=counted.device),
                                       batch.seqlens().long())
    num_tokens = torch.zeros(batch.num_sequences, device=counted.device).index_add(0, sequence, counted)
    return (batch.weight.abs() * num_tokens).sum().clamp(min=1)


def fused_loss(policy, batch):
    """The trainer's path: ``Policy`` (decoder body on its row layout) + ``ops.sequence_logprobs_and_loss``."""
    return policy(batch, batch.weight / normaliser(batch))[1]


def full_logits_loss(policy, batch):
    """The model's own path on the same layout: ``model(...).logits`` [T, V], log_softmax, gather, the same loss."""
    model = policy.model
    if uses_flash_attention(model):
        logits = model(input_ids=batch.input_ids[None], position_ids=batch.position_ids[None],
                       use_cache=False).logits[0]
    else:
        rows = RowBatch(batch, policy.max_row_tokens)
        logits = model(input_ids=rows.input_ids, position_ids=rows.position_ids, attention_mask=rows.mask,
                       use_cache=False).logits  # [B, L, V], padding slots included
        logits = logits.reshape(-1, logits.shape[-1]).index_select(0, rows.index)  # [T, V]
    counted = (batch.targets != -100) & batch.loss_mask
    logp = torch.log_softmax(logits.float(), dim=-1).gather(1, batch.targets.clamp(min=0)[:, None]).squeeze(1)
    sequence = torch.repeat_interleave(torch.arange(batch.num_sequences, device=logits.device),
                                       batch.seqlens().long())
    seq_logp = torch.zeros(batch.num_sequences, device=logits.device).index_add(0, sequence, logp * counted)
    return -(batch.weight * seq_logp).sum() / normaliser(batch)


LOSSES = {"fused": fused_loss, "full": full_logits_loss}


class Step:
    def __init__(self, args):
        self.args, self.device = args, args.device
        self.tokenizer = char_tokenizer()
        self.model = tiny_model(args.vocab, seed=0).to(args.device)
        self.policy = Policy(self.model, max_row_tokens=args.max_row_tokens)
        self.optimizers = {name: torch.optim.AdamW(self.policy.parameters(), lr=1e-5) for name in LOSSES}
        self.sampler = HFSampler(self.model, self.tokenizer, max_new_tokens=args.max_new_tokens,
                                 batch_size=args.generate_batch, progress=False)
        self.task = ArithmeticTask(levels=(1, 2, 3, 4))
        self.problems, self.prompt_ids, self.texts, self.owners = make_rollouts(
            self.tokenizer, args.prompts, args.n, seed=0)
        eos = self.tokenizer.eos_token_id
        self.pairs = [(self.prompt_ids[p], self.tokenizer(t, add_special_tokens=False).input_ids + [eos])
                      for t, p in zip(self.texts, self.owners)]

    def rollout(self, timer):
        """The phases that do not depend on q -> (rewards [P·n], groups [P·n])."""
        timer("generate", lambda: self.sampler.generate(self.prompt_ids, self.args.n, seed=0))
        scores = timer("grade", lambda: Grader(self.task).score([self.problems[p] for p in self.owners], self.texts))

        return scores.reward, timer("group", lambda: grouping.response_groups(self.texts))

    def select(self, q, rewards, groups, timer):
        """The ILP at budget q and the packed update batch of the selected responses -> (batch, # extended)."""
        selection = timer("ilp", lambda: budget.solve(rewards, groups, self.owners, q, max_per_prompt=1))
        chosen = selection.weights.nonzero()[0]
        batch = timer("pack", lambda: pack([self.pairs[i] for i in chosen], prompt_index=self.owners[chosen],
                                           group=groups[chosen], reward=rewards[chosen], device=self.device))
        return batch, int((groups[chosen] > 0).sum())

    @torch.no_grad()
    def loss_gap(self, batch) -> float:
        """|fused - full| / |full| of the loss on ``batch``: both variants compute the same number."""
        fused, full = (float(loss(self.policy, batch)) for loss in (fused_loss, full_logits_loss))
        return abs(fused - full) / max(abs(full), 1e-30)

    def update(self, loss_name, batch, timer):
        optimizer = self.optimizers[loss_name]
        timer("fwd_bwd", lambda: LOSSES[loss_name](self.policy, batch).backward())
        timer("optimizer", lambda: optimizer_step(self.policy, optimizer, max_grad_norm=1.0))


def measure(step, args):
    """Per repeat: the q-independent phases once, then for each q the ILP, pack and both updates (interleaved,
    so a slow spell of the machine hits every budget and both losses alike)."""
    samples = {(q, name): [] for q in args.budgets for name in LOSSES}
    batches, peaks, loss_gaps = {}, {}, {}
    for repeat in range(args.repeats):
        shared = Timer(args.device)
        rewards, groups = step.rollout(shared)
        for q in args.budgets:
            selecting = Timer(args.device)
            batches[q] = step.select(q, rewards, groups, selecting)
            if repeat == 0:
                loss_gaps[q] = step.loss_gap(batches[q][0])
            for name in LOSSES:
                timer = Timer(args.device)
                if repeat == 0:
                    peaks[q, name] = peak_memory(lambda: step.update(name, batches[q][0], timer), device=args.device)
                else:
                    step.update(name, batches[q][0], timer)
                samples[q, name].append({**shared.ms, **selecting.ms, **timer.ms})
        rows = [row for q in args.budgets for row in budget_rows(q, *batches[q], samples, peaks, args)]
        for row in rows:
            if row["loss"].startswith("ratio"):
                row["loss_rel_diff"] = loss_gaps[row["q"]]
        save_partial(args.out, "train", rows)  # medians of the repeats so far, in case a time limit cuts the run
        print(f"  repeat {repeat + 1}/{args.repeats} done", flush=True)
    (Path(args.out) / "train.partial.json").unlink()
    return rows


def budget_rows(q, batch, extended, samples, peaks, args):
    rows = []
    for name in LOSSES:
        runs = samples[q, name]
        row = {"q": q, "loss": name, "tokens": batch.num_tokens, "selected": batch.num_sequences, "extended": extended}
        for phase in ROLLOUT_PHASES + UPDATE_PHASES:
            row[f"{phase}_ms"] = statistics.median(s[phase] for s in runs)
        row["step_ms"] = statistics.median(sum(s.values()) for s in runs)
        update_s = statistics.median(s["fwd_bwd"] + s["optimizer"] for s in runs) / 1e3
        row["update_tok_s"] = batch.num_tokens / update_s
        row["step_tok_s"] = batch.num_tokens / (row["step_ms"] / 1e3)
        row["samples_s"] = args.prompts * args.n / (row["step_ms"] / 1e3)
        row["peak_mib"] = peaks[q, name] / 2**20
        rows.append(row)
    fused, full = rows
    ratio = {"q": q, "loss": "ratio fused/full", "tokens": batch.num_tokens}
    for key in ("update_tok_s", "step_tok_s", "samples_s"):
        ratio[key] = fused[key] / full[key]
    for key in ("fwd_bwd_ms", "step_ms", "peak_mib"):
        ratio[key] = full[key] / fused[key] if fused[key] else None  # > 1: the fused loss is better
    return [fused, full, ratio]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_out", help="folder for train.json, train.md and train_*.png")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="tiny: V=1000, 4 prompts, 2 budgets, 1 repeat")
    parser.add_argument("--budgets", type=float, nargs="+", default=None)
    parser.add_argument("--vocab", type=int, default=None, help="LM head size V (default 32000)")
    parser.add_argument("--prompts", type=int, default=None, help="P (default 32 CPU, 256 CUDA)")
    parser.add_argument("--n", type=int, default=8, help="responses per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--generate-batch", type=int, default=128)
    parser.add_argument("--max-row-tokens", type=int, default=2048, help="the trainer's sdpa row length")
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("train: --device cuda but no CUDA device here")
    quick = args.quick
    args.budgets = args.budgets or ([0.0, 1.0] if quick else list(BUDGETS))
    args.vocab = args.vocab or (1000 if quick else 32000)
    args.prompts = args.prompts or (4 if quick else 256 if args.device == "cuda" else 32)
    args.repeats = args.repeats or (1 if quick else 3)
    if quick:
        args.n, args.max_new_tokens = min(args.n, 4), min(args.max_new_tokens, 4)
    step = Step(args)
    rewards, groups = step.rollout(Timer(args.device))  # warm-up: first calls, numba, allocator, optimizer state
    for name in LOSSES:
        step.update(name, step.select(args.budgets[-1], rewards, groups, Timer(args.device))[0], Timer(args.device))
    rows = measure(step, args)
    path = write_results(args.out, "train", rows, columns=COLUMNS)
    for ratio in (r for r in rows if r["loss"].startswith("ratio")):
        print(f"goal (CPU): update tokens/s fused/full >= 1.5 at q={ratio['q']}: {ratio['update_tok_s']:.2f}x "
              f"({'yes' if ratio['update_tok_s'] >= 1.5 else 'NO'}); whole step {ratio['step_tok_s']:.2f}x")
    plot(args.out, rows)
    return path


def plot(out_dir, rows):
    if not plots_available():
        return
    by_loss = {name: [r for r in rows if r["loss"] == name] for name in LOSSES}
    qs = [r["q"] for r in by_loss["fused"]]
    plot_lines(Path(out_dir) / "train_tokens.png", qs,
               {f"{name} {key}": [r[key] for r in by_loss[name]] for name in LOSSES
                for key in ("update_tok_s", "step_tok_s")},
               xlabel="budget q", ylabel="tokens / s", title="train step: fused vs full-logits loss")
    plot_lines(Path(out_dir) / "train_phases.png", qs,
               {**{phase: [r[f"{phase}_ms"] for r in by_loss["fused"]] for phase in ROLLOUT_PHASES},
                **{f"{name} {phase}": [r[f"{phase}_ms"] for r in by_loss[name]] for name in LOSSES
                   for phase in UPDATE_PHASES}},
               xlabel="budget q", ylabel="ms (median)", title="train step phases", logy=True)


if __name__ == "__main__":
    main()
