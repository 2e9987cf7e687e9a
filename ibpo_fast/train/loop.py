"""The IBPO training loop (DESIGN.md §5). Deviations from the paper, and how to run it:

    ibpo-fast train --preset tiny --steps 3 --out runs/tiny          # or: python -m ibpo_fast.train ...
    torchrun --nproc_per_node=2 -m ibpo_fast.train --preset tiny    # FSDP2, prompts sharded over ranks

* The tiny preset first runs `warmup_steps` of SFT on demonstrations (regular under the "solve" tag,
  voting under "vote", and either one at random under "auto"), so the random model learns the formats
  and starts IBPO undecided between them; IBPO then samples with the "auto" (ASV) prompt, and the
  budget shapes the model's own choice of format.
* The update is the paper's weighted SFT on the ILP's selection with Z = selected response tokens; the
  learning rate is constant (no schedule). The main phase starts with a fresh AdamW state, as a run from
  `init_from` does: the warm-up's moments, from SFT at 10x the learning rate, carried into IBPO, left the
  README job's policy voting alike on every level (seed 0, q = 0.5: test extended share 0.34 / 0.47 / 0.41
  on levels 1 / 2 / 3) where the same warm-up model with a fresh optimizer (the frontier) allocated.
* `mode=rft` is the same loop with q = 1; `mode=sft` trains on demonstrations (SV-SFT / ASV-SFT).
"""
from __future__ import annotations

import signal

import numpy as np
from tqdm.auto import tqdm

from ibpo_fast.seeding import derive_seed
from ibpo_fast.train import checkpoint, distributed, phases, summary
from ibpo_fast.train.components import Run, build
from ibpo_fast.train.config import TrainConfig
from ibpo_fast.train.metrics import PhaseTimer, rollout_record

WARMUP_FORMATS = (("regular", "regular"), ("sv", "sv"), ("asv", "regular"), ("asv", "sv"))


def train(cfg: TrainConfig) -> Run:
    """Run (or resume) the warm-up and the main phase; at the end save the model and the held-out summary.
    `run.stopped_at` is the step a Ctrl-C or `stop_after` stopped at (a checkpoint is saved), else None."""
    run = build(cfg)
    say = print if run.world.is_main else (lambda *_: None)
    total = cfg.warmup_steps + cfg.steps
    end = min(total, cfg.stop_after) if cfg.stop_after else total
    if run.start_step:
        say(f"resumed from step {run.start_step} of {total} ({run.out / checkpoint.CHECKPOINT})")
    stop = _StopOnSigint()
    for label, steps in _phases(cfg, run.start_step, end):
        bar = tqdm(steps, desc=label, disable=not (cfg.progress and run.world.is_main))
        for step in bar:
            bar.set_postfix(_progress(one_step(run, step), cfg), refresh=False)
            interrupted = distributed.any_rank(run.world, stop.requested)
            if interrupted or (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0):
                _save(run, step + 1)
            if interrupted:
                run.stopped_at, run.interrupted = step + 1, True
                break
        bar.close()
        if run.stopped_at is not None:
            break
    else:
        _save(run, end)
        if end < total:
            run.stopped_at = end
        else:
            checkpoint.save_model(run.out, policy=run.policy, cfg=cfg, world=run.world)
            summary.finish(run)
    stop.restore()
    run.metrics.close(), run.warmup_metrics.close()
    distributed.shutdown(run.world)
    return run


def _phases(cfg: TrainConfig, start: int, end: int):
    """(progress label, steps) of the warm-up and of the main phase that fall in [start, end)."""
    main = {"ibpo": f"ibpo q={cfg.q:g}", "rft": "rft", "sft": f"sft-{cfg.sft_format}"}[cfg.mode]
    for label, first, last in (("warm-up", 0, cfg.warmup_steps), (main, cfg.warmup_steps, cfg.warmup_steps + cfg.steps)):
        steps = range(max(first, start), min(last, end))
        if len(steps):
            yield label, steps


def _progress(record: dict, cfg: TrainConfig) -> dict:
    """The progress bar's figures: the loss in SFT steps; reward and extended shares (sampled by the policy,
    selected by the ILP) against q in RL steps."""
    if "reward_mean" not in record:
        return {"loss": f"{record['loss']:.3f}"}
    return {"reward": f"{record['reward_mean']:.2f}", "extended": f"{record['sampled_extended_share']:.2f}",
            "selected": f"{record['selected_extended_share']:.2f}", "q": f"{cfg.budget:g}"}


def one_step(run: Run, step: int) -> dict:
    """Warm-up steps come first (logged to warmup.jsonl), then the mode's steps (metrics.jsonl,
    numbered from 0)."""
    cfg = run.cfg
    if step < cfg.warmup_steps:
        record = {"step": step, **sft_step(run, step, formats=WARMUP_FORMATS, batch=cfg.warmup_batch,
                                           lr=warmup_lr(cfg, step))}
        run.warmup_metrics.log(record)
        return record
    if step == cfg.warmup_steps:
        run.optimizer.state.clear()
    if cfg.mode == "sft":
        record = sft_step(run, step, formats=(("asv", cfg.sft_format),), batch=cfg.sft_batch, lr=cfg.lr)
    else:
        record = rl_step(run, step)
    record = {"step": step - cfg.warmup_steps, **record}
    run.metrics.log(record)
    return record


def warmup_lr(cfg: TrainConfig, step: int) -> float:
    """The warm-up's learning rate at `step`: constant, or falling linearly to `warmup_lr_end` at the last step."""
    if cfg.warmup_lr_end is None or cfg.warmup_steps < 2:
        return cfg.warmup_lr
    return cfg.warmup_lr + (cfg.warmup_lr_end - cfg.warmup_lr) * step / (cfg.warmup_steps - 1)


def _save(run: Run, next_step: int) -> None:
    checkpoint.save(run.out, policy=run.policy, optimizer=run.optimizer, buffer=run.buffer, step=next_step,
                    cfg=run.cfg, world=run.world)


def rl_step(run: Run, step: int) -> dict:
    """IBPO (or RFT): sample → grade → group → ILP → weighted update."""
    cfg, world, timer = run.cfg, run.world, PhaseTimer(run.world.device)
    problems, first = phases.shard(run.task.problems("train", cfg.prompts_per_step, seed=_data_seed(cfg, step)), world)
    with timer("generate"), run.generation_weights():
        drawn = phases.generate(run.sampler, run.tokenizer, run.task, problems, first, cfg, step)
    with timer("grade"):
        samples = phases.grade(run.task, problems, drawn, first)
    with timer("group"):
        phases.assign_groups(samples, cfg.extended_trials)
    with timer("ilp"):
        gathered, selection = phases.select(world, samples, run.buffer, cfg)
    figures = _update(run, samples, gathered["weight"], gathered["tokens"], cfg.lr, timer, gathered["anchor"])
    record = {"q": cfg.budget, "mode": cfg.mode, **figures, **rollout_record(gathered, selection, cfg)}
    return {**record, "tokens_per_s": float(gathered["tokens"].sum()) / sum(timer.seconds.values()),
            **{f"time_{phase}": seconds for phase, seconds in timer.seconds.items()}}


def sft_step(run: Run, step: int, *, formats, batch: int, lr: float) -> dict:
    """Warm-up / SV-SFT / ASV-SFT: one demonstration per problem, every one learned (weight 1)."""
    cfg, world, timer = run.cfg, run.world, PhaseTimer(run.world.device)
    problems, first = phases.shard(run.task.problems("train", batch, seed=_data_seed(cfg, step)), world)
    samples = phases.demonstrations(run.tokenizer, problems, first, seed=cfg.seed, step=step,
                                    formats=formats, verbose=cfg.verbose_prompts, extended_trials=cfg.extended_trials)
    gathered = distributed.all_gather_arrays(world, {"weight": samples.weight, "tokens": samples.response_tokens(),
                                                  "group": samples.group})
    figures = _update(run, samples, gathered["weight"], gathered["tokens"], lr, timer)
    return {"mode": "warmup" if step < cfg.warmup_steps else f"sft-{cfg.sft_format}", "lr": lr, **figures,
            "demo_extended_share": float(gathered["group"].mean()),
            "tokens_per_s": float(gathered["tokens"].sum()) / sum(timer.seconds.values()),
            **{f"time_{phase}": seconds for phase, seconds in timer.seconds.items()}}


def _update(run: Run, samples, all_weights, all_tokens, lr: float, timer: PhaseTimer, all_anchors=None) -> dict:
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    with timer("forward_backward"):
        local = phases.update(run.policy, samples, all_weights, all_tokens, run.world, run.cfg, all_anchors)
    with timer("optimizer"):
        if not local["skipped"]:  # skipping is global: the decision comes from gathered arrays
            phases.optimizer_step(run.policy, run.optimizer, run.cfg.max_grad_norm)
    # Log time: the one host sync of the step, and the one reduction of the local figures.
    parts = distributed.all_gather_arrays(run.world, {key: np.array([float(local[key])])
                                                      for key in ("loss", "abs_diff", "tokens")})
    return {"loss": float(parts["loss"].mean()), "update_skipped": local["skipped"],
            "logprob_abs_diff": float(parts["abs_diff"].sum() / max(parts["tokens"].sum(), 1.0)),
            "train_tokens": int(local["learned_tokens"])}


def _data_seed(cfg: TrainConfig, step: int) -> int:
    """A step's prompts depend on (seed, step) alone: the step is the data position."""
    return derive_seed(cfg.seed, "data", step)


class _StopOnSigint:
    """Ctrl-C asks the loop to stop after the current step (it then saves a checkpoint); a second
    Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self):
        signal.signal(signal.SIGINT, self._previous)
