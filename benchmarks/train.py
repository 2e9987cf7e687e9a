"""The trainer's IBPO step, phase by phase, and its rollout engines, on the tiny default or SmolLM2.

    python -m benchmarks train --out bench_out                              # tiny preset (warm-up trained)
    python -m benchmarks train --model smollm2 --prompts 4 --n 4 --max-new-tokens 128 --out bench_out
    python -m benchmarks train --device cuda --out bench_out

Everything is the trainer's own code: `train.components.build` (model, policy, sampler, task, buffer) from
the preset (`configs/<model>.yaml`), then `train.phases`: `generate`, `grade`, `assign_groups`, `select`,
`update`, `optimizer_step`, timed by `metrics.PhaseTimer`. The tiny model is first warm-up trained by the
trainer (`--warmup-steps`, default the preset's 1200; reused from `OUT/train_warmup` when there), so its
responses are realistic: right and wrong answers, regular and voting. Two tables:

- `train_engines`: `phases.generate` of the same P·n responses per engine (the same seeds in every repeat),
  interleaved in each repeat.
  `generate@R` is transformers' `generate` with R rows per call (R = 64: the former `generate_batch`, the
  baseline), `generate` and `decode` the package's engines at the preset's `generate_kv_gib`; the
  optional `static` (`generate` with `cache_implementation="static"`) and `cb` (transformers'
  continuous batching, `model.generate_batch`) sample with HF's own RNG, so their responses differ
  (the same distribution in theory). `tok_s` = generated tokens / s; `speedup` against the first
  engine; `same` = share of responses token-identical to the first engine's; `peak_mib` = peak memory of
  the call above what was held before it (CPU: resident set, coarse); `load_avg`: the machine's 1-minute
  load average before and after the table.
- `train`: the step at each budget q with the default engine's rollouts: grade and group once, then per q
  the ILP and the update twice, with the trainer's fused `Policy` and with a full-logits twin of it
  (benchmark-only: `lm_head(hidden)` [T, V] → log_softmax → gather → the same loss; same rows, same
  weights, same normaliser, since both go through `phases.update`). `update_tok_s` = learned tokens /
  (forward_backward + optimizer); `step_ms` includes the default engine's generate; `peak_mib` of the
  update. Rows `ratio` give fused / full.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import GenerationConfig

from benchmarks.common import peak_memory, plot_lines, plots_available, save_partial, write_results
from ibpo_fast import budget
from ibpo_fast.models import encode_prompts, kv_cache_bytes_per_token
from ibpo_fast.rollout import HFSampler, prompt_text
from ibpo_fast.train import TrainConfig, train
from ibpo_fast.train import phases
from ibpo_fast.train.components import build
from ibpo_fast.train.config import load_config
from ibpo_fast.train.metrics import PhaseTimer
from ibpo_fast.train.policy import Policy

BUDGETS = (0.0, 0.5, 1.0)
ENGINE_COLUMNS = ["model", "engine", "rows", "responses", "tokens", "generate_s", "tok_s", "speedup", "same",
                  "peak_mib", "load_avg"]
STEP_PHASES = ("generate", "grade", "group", "ilp", "forward_backward", "optimizer")
STEP_COLUMNS = ["q", "loss", "selected", "tokens", *(f"{p}_ms" for p in STEP_PHASES), "step_ms", "update_tok_s",
                "peak_mib", "loss_rel_diff"]


class FullLogitsPolicy(Policy):
    """The trainer's `Policy` with the model's own head: [T, V] logits, log_softmax, gather (the baseline)."""

    def forward(self, batch, seq_weights, temperature: float = 1.0):
        logits = self.model.lm_head(self.hidden(batch)).float() / temperature  # [T, V]
        counted = (batch.targets != -100) & batch.loss_mask
        logp = torch.log_softmax(logits, -1).gather(1, batch.targets.clamp(min=0)[:, None]).squeeze(1) * counted
        sequence = torch.repeat_interleave(torch.arange(batch.num_sequences, device=logp.device),
                                           batch.seqlens().long())
        seq_logp = torch.zeros(batch.num_sequences, device=logp.device).index_add(0, sequence, logp)
        return seq_logp.detach(), -(seq_weights * seq_logp).sum()


def warm_model(args) -> str:
    """A warm-up-trained tiny model (the trainer, `--warmup-steps` SFT steps), reused when present."""
    folder = Path(args.out) / "train_warmup"
    if (folder / "model.pt").is_file():
        print(f"train: reusing the warm-up model {folder / 'model.pt'}", flush=True)
    else:
        print(f"train: warm-up training the tiny model ({args.warmup_steps} steps) into {folder}", flush=True)
        train(load_config(TrainConfig, preset="tiny", overrides=dict(
            steps=0, warmup_steps=args.warmup_steps, out=str(folder), progress=False, tensorboard=False)))
    return str(folder / "model.pt")


class Engines:
    """Each engine's `phases.generate` on the run's problems -> response token lists."""

    def __init__(self, run, problems):
        self.run, self.problems = run, problems
        prompt_ids = encode_prompts(run.tokenizer, [prompt_text(p, "asv", verbose=run.cfg.verbose_prompts)
                                                    for p in problems])
        self.jobs = [ids for ids in prompt_ids for _ in range(run.cfg.samples_per_prompt)]
        self.prompt_tokens = max(map(len, prompt_ids))

    def sampler(self, name: str) -> HFSampler:
        """`engine` at the preset's KV budget, or `engine@R`: a budget of exactly R rows."""
        engine, _, rows = name.partition("@")
        model, cfg = self.run.policy.model, self.run.cfg
        row_bytes = kv_cache_bytes_per_token(model.config, model.dtype) * (self.prompt_tokens + cfg.max_new_tokens)
        return HFSampler(model, self.run.tokenizer, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                         kv_cache_gib=int(rows) * row_bytes / 2**30 if rows else cfg.generate_kv_gib,
                         engine=engine, progress=False)

    def rows(self, name: str) -> int | None:
        """Rows in flight (None: cb sizes its own batches)."""
        if name == "cb":
            return None
        sampler = self.sampler("generate" if name == "static" else name)
        return min(len(self.jobs), sampler.rows_in_flight(self.prompt_tokens))

    def __call__(self, name: str, step: int) -> list[list[int]]:
        """Response token lists of engine `name` (in prompt order)."""
        run = self.run
        if name in ("static", "cb"):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(step)
                return (self._static if name == "static" else self._continuous_batching)()
        with run.generation_weights():
            out = phases.generate(self.sampler(name), run.tokenizer, run.task, self.problems, 0, run.cfg, step)
        return [r.response_ids for r in out.rollouts]

    def _hf_config(self) -> GenerationConfig:
        tok = self.run.tokenizer
        return GenerationConfig(do_sample=True, temperature=self.run.cfg.temperature, top_k=None, top_p=None,
                                max_new_tokens=self.run.cfg.max_new_tokens, eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.pad_token_id)

    def _static(self) -> list[list[int]]:
        model, pad, rows = self.run.policy.model, self.run.tokenizer.pad_token_id, self.rows("static")
        responses = []
        for start in range(0, len(self.jobs), rows):
            batch = self.jobs[start:start + rows]
            width = max(map(len, batch))
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=model.device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=model.device)
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=self._hf_config(),
                                 cache_implementation="static")
            responses += [_until_eos(row, self.run.tokenizer.eos_token_id) for row in out[:, width:].tolist()]
        return responses

    def _continuous_batching(self) -> list[list[int]]:
        results = self.run.policy.model.generate_batch(inputs=self.jobs, generation_config=self._hf_config())
        return [list(r.generated_tokens) for r in results.values()]


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[:ids.index(eos) + 1] if eos in ids else ids


def measure_engines(engines: Engines, args) -> list[dict]:
    seconds = {name: [] for name in args.engines}
    tokens, peaks, same = {}, {}, {}
    for name in args.engines:  # warm-up: first calls, allocator
        engines(name, 0)
    for repeat in range(args.repeats):
        reference = None
        for name in args.engines:  # interleaved, so a slow spell of a shared machine hits every engine alike
            start = time.perf_counter()
            if repeat == 0:
                box = {}
                peaks[name] = peak_memory(lambda: box.update(out=engines(name, 0)), device=args.device)
                responses = box["out"]
            else:
                responses = engines(name, 0)  # the same seeds every repeat: the same work
            seconds[name].append(time.perf_counter() - start)
            reference = reference or responses
            tokens[name] = sum(map(len, responses))
            same[name] = sum(a == b for a, b in zip(responses, reference)) / len(reference)
        print(f"  engines: repeat {repeat + 1}/{args.repeats} done", flush=True)
    rows = []
    for name in args.engines:
        median = statistics.median(seconds[name])
        rows.append({"model": args.model, "engine": name, "rows": engines.rows(name), "responses": len(engines.jobs),
                     "tokens": tokens[name], "generate_s": median, "tok_s": tokens[name] / median,
                     "same": same[name] if name not in ("static", "cb") else None, "peak_mib": peaks[name] / 2**20})
    for row in rows:
        row["speedup"] = row["tok_s"] / rows[0]["tok_s"]
    return rows


def measure_step(run, problems, args) -> list[dict]:
    """Per repeat: generate (default engine), grade and group once; per q the ILP and both updates."""
    policies = {"fused": run.policy, "full": FullLogitsPolicy(run.policy.model, max_row_tokens=run.cfg.max_row_tokens)}
    optimizers = {name: torch.optim.AdamW(run.policy.parameters(), lr=args.lr) for name in policies}
    times = {(q, name): [] for q in args.budgets for name in policies}
    info, peaks = {}, {}
    for repeat in range(-1, args.repeats):  # repeat -1: warm-up (numba, optimizer state)
        shared = PhaseTimer(run.world.device)
        with shared("generate"), run.generation_weights():  # as the loop times it
            drawn = phases.generate(run.sampler, run.tokenizer, run.task, problems, 0, run.cfg, repeat + 1)
        with shared("grade"):
            samples = phases.grade(run.task, problems, drawn, 0)
        with shared("group"):
            phases.assign_groups(samples, run.cfg.extended_trials)
        for q in args.budgets:
            cfg = dataclasses.replace(run.cfg, q=q, accumulate_steps=1)
            selecting = PhaseTimer(run.world.device)
            with selecting("ilp"):
                gathered, _ = phases.select(run.world, samples, budget.SampleBuffer(1), cfg)
            if repeat < 0:  # both losses on the same weights, before any update: they must agree
                losses = {name: float(phases.update(policy, samples, gathered["weight"], gathered["tokens"], run.world,
                                                    cfg)["loss"]) for name, policy in policies.items()}
                run.policy.zero_grad(set_to_none=True)
                info[q] = (int((gathered["weight"] > 0).sum()), float(gathered["weight"] @ gathered["tokens"]), losses)
            for name, policy in policies.items():
                timer = PhaseTimer(run.world.device)

                def update():
                    with timer("forward_backward"):
                        figures = phases.update(policy, samples, gathered["weight"], gathered["tokens"], run.world, cfg)
                    with timer("optimizer"):
                        if not figures["skipped"]:
                            phases.optimizer_step(policy, optimizers[name], cfg.max_grad_norm)

                if repeat == 0:
                    peaks[q, name] = peak_memory(update, device=args.device)
                else:
                    update()
                if repeat >= 0:
                    times[q, name].append({**shared.seconds, **selecting.seconds, **timer.seconds})
        if repeat >= 0:
            save_partial(args.out, "train", step_rows(times, info, peaks, args))
            print(f"  step: repeat {repeat + 1}/{args.repeats} done", flush=True)
    (Path(args.out) / "train.partial.json").unlink()
    return step_rows(times, info, peaks, args)


def step_rows(times, info, peaks, args) -> list[dict]:
    rows = []
    for q in args.budgets:
        selected, tokens, losses = info[q]
        pair = []
        for name in ("fused", "full"):
            runs = times[q, name]
            row = {"q": q, "loss": name, "selected": selected, "tokens": tokens}
            for phase in STEP_PHASES:
                row[f"{phase}_ms"] = 1e3 * statistics.median(s.get(phase, 0.0) for s in runs)
            row["step_ms"] = 1e3 * statistics.median(sum(s.values()) for s in runs)
            update_s = statistics.median(s.get("forward_backward", 0) + s.get("optimizer", 0) for s in runs)
            row["update_tok_s"] = tokens / update_s if update_s else None
            row["peak_mib"] = peaks.get((q, name), 0) / 2**20
            pair.append(row)
        fused, full = pair
        ratio = {"q": q, "loss": "ratio fused/full", "selected": selected, "tokens": tokens,
                 "forward_backward_ms": _ratio(full["forward_backward_ms"], fused["forward_backward_ms"]),
                 "step_ms": _ratio(full["step_ms"], fused["step_ms"]),
                 "update_tok_s": _ratio(fused["update_tok_s"], full["update_tok_s"]),
                 "peak_mib": _ratio(full["peak_mib"], fused["peak_mib"]),
                 "loss_rel_diff": abs(losses["fused"] - losses["full"]) / max(abs(losses["full"]), 1e-30)}
        rows += [fused, full, ratio]
    return rows


def _ratio(a, b):
    return a / b if a and b else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_out", help="folder for train*.json / .md and the warm-up model")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="8 prompts x 4 samples, 128 new tokens, 300 warm-up "
                                                             "steps, 1 repeat, q in {0, 1}")
    parser.add_argument("--model", default="tiny", help="a preset with a model: tiny or smollm2")
    parser.add_argument("--init-from", default="", help="weights (model.pt, checkpoint folder or run folder) instead of the warm-up")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="tiny: warm-up SFT steps when no --init-from (default: the preset's, 1200)")
    parser.add_argument("--prompts", type=int, default=None, help="P (default: the preset's prompts_per_step)")
    parser.add_argument("--n", type=int, default=None, help="responses per prompt (default: the preset's)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the preset's")
    parser.add_argument("--generate-kv-gib", type=float, default=None, help="default: the preset's")
    parser.add_argument("--engines", nargs="+", default=["generate@64", "generate", "decode"],
                        help="first = the baseline; generate@R (R rows per call), generate, decode, static, cb")
    parser.add_argument("--budgets", type=float, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--lr", type=float, default=1e-6, help="the updates' learning rate (small: the policy "
                                                              "barely moves between repeats)")
    parser.add_argument("--skip-step", action="store_true", help="the engine table only")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("train: --device cuda but no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.prompts, args.n, args.max_new_tokens = args.prompts or 8, args.n or 4, args.max_new_tokens or 128
        args.warmup_steps, args.budgets = args.warmup_steps or 300, args.budgets or [0.0, 1.0]
    args.budgets, args.repeats = args.budgets or list(BUDGETS), args.repeats or (1 if args.quick else 3)
    args.warmup_steps = args.warmup_steps or load_config(TrainConfig, preset="tiny").warmup_steps
    init_from = args.init_from or (warm_model(args) if args.model == "tiny" else "")
    overrides = {"prompts_per_step": args.prompts, "samples_per_prompt": args.n, "max_new_tokens": args.max_new_tokens,
                 "generate_kv_gib": args.generate_kv_gib}
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config(TrainConfig, preset=args.model, overrides={
            **{k: v for k, v in overrides.items() if v is not None}, "init_from": init_from, "device": args.device,
            "out": run_dir, "warmup_steps": 0, "progress": False, "tensorboard": False})
        run = build(cfg)
        problems = run.task.problems("train", cfg.prompts_per_step, seed=0)
        load = os.getloadavg()[0]
        engine_rows = measure_engines(Engines(run, problems), args)
        for row in engine_rows:  # a shared machine: the 1-minute load average around the measurement
            row["load_avg"] = [load, os.getloadavg()[0]]
        path = write_results(args.out, "train_engines", engine_rows, columns=ENGINE_COLUMNS)
        if not args.skip_step:
            step = measure_step(run, problems, args)
            path = write_results(args.out, "train", step, columns=STEP_COLUMNS)
            plot(args.out, step)
    default = next(r for r in engine_rows if r["engine"] == cfg.generate_engine)
    print(f"goal: generation tokens/s of the default engine ({cfg.generate_engine}) >= 2x {engine_rows[0]['engine']}: "
          f"{default['speedup']:.2f}x ({'yes' if default['speedup'] >= 2 else 'NO'})")
    return path


def plot(out_dir, rows):
    if not plots_available():
        return
    by_loss = {name: [r for r in rows if r["loss"] == name] for name in ("fused", "full")}
    qs = [r["q"] for r in by_loss["fused"]]
    plot_lines(Path(out_dir) / "train_tokens.png", qs,
               {f"{name} update_tok_s": [r["update_tok_s"] for r in by_loss[name]] for name in by_loss},
               xlabel="budget q", ylabel="learned tokens / s", title="train step: fused vs full-logits loss")
    plot_lines(Path(out_dir) / "train_phases.png", qs,
               {f"{name} {phase}": [r[f"{phase}_ms"] or None for r in by_loss[name]] for name in by_loss
                for phase in STEP_PHASES if name == "fused" or phase in ("forward_backward", "optimizer")},
               xlabel="budget q", ylabel="ms (median)", title="train step phases", logy=True)


if __name__ == "__main__":
    main()
