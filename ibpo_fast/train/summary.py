"""The end of a run: what it did, on held-out problems, saved as `out/summary.json` and printed.

Held-out = `summary_problems_per_level` test problems of each level answered once with the adaptive
prompt (the model chooses), graded as `ibpo-fast eval` grades them: accuracy, tokens per problem and
extended share per level, and the test-time extended share against the budget q (DESIGN §1: the budget
caps the training targets; the test share is what the policy learned). The last steps' sampled and
selected extended shares come from metrics.jsonl.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ibpo_fast.train import checkpoint, distributed

LAST_STEPS = 5  # training shares are averaged over this many final steps


def training_shares(records: list[dict], last_steps: int) -> dict:
    """The sampled and selected extended shares averaged over the last `last_steps` IBPO / RFT steps of a
    metrics file's records (and how many steps that was); {} when it has none."""
    last = [r for r in records if "sampled_extended_share" in r][-last_steps:]
    if not last:
        return {}
    return {"steps": len(last), **{key: float(np.mean([r[key] for r in last]))
                                   for key in ("sampled_extended_share", "selected_extended_share")}}


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def held_out(run) -> dict | None:
    """The adaptive-prompt figures on held-out problems (every rank takes part; rank 0 generates)."""
    from ibpo_fast.train.evaluate import answer, summarize, test_problems

    cfg = run.cfg
    if cfg.summary_problems_per_level == 0:
        return None
    answers = None
    with run.generation_weights() as model:  # collective under FSDP: every rank enters, rank 0 generates
        if run.world.is_main:
            problems = test_problems(run.task, cfg, cfg.summary_problems_per_level, seed=cfg.seed)
            answers = answer(model, run.tokenizer, run.task, problems, "asv", 1, cfg=cfg,
                             max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed,
                             progress=False)
    distributed.any_rank(run.world, False)  # the other ranks wait for rank 0's generation
    if answers is None:
        return None
    regular = ~answers.extended
    regular_tokens = float(answers.tokens[regular].mean()) if regular.any() else float("nan")
    return summarize(problems, answers.correct, answers.extended, answers.tokens, regular_tokens)


def finish(run) -> dict | None:
    """Write summary.json, draw the plots and print the summary with the next commands (rank 0)."""
    test = held_out(run)
    if not run.world.is_main:
        return None
    out, cfg = run.out, run.cfg
    files = {"model": str(out / checkpoint.MODEL), "metrics": str(out / "metrics.jsonl")}
    try:
        from ibpo_fast.plot import plot
        files["plots"] = [str(p) for p in plot(out / "metrics.jsonl", out)] if cfg.steps and cfg.mode != "sft" else []
    except ImportError:  # matplotlib is an extra (viz / dev)
        files["plots"] = []
    result = {"mode": cfg.mode, "q": cfg.budget, "steps": cfg.steps, "warmup_steps": cfg.warmup_steps,
              "problems_per_level": cfg.summary_problems_per_level, "test": test,
              "training_last_steps": training_shares(_records(out / "metrics.jsonl"), LAST_STEPS), "files": files}
    (out / "summary.json").write_text(json.dumps(result, indent=1))
    print("\n".join(report(result, out)))
    return result


def report(result: dict, out: Path) -> list[str]:
    lines = [f"done: {result['steps']} {result['mode']} steps after {result['warmup_steps']} warm-up steps"]
    test = result["test"]
    if test:
        lines.append(f"held-out, {result['problems_per_level']} problems per level, adaptive prompt:")
        lines.append("  level  accuracy  extended  tokens/problem")
        for level, figures in {**test["levels"], "all": test}.items():
            lines.append(f"  {level:<5}  {figures['accuracy']:8.2f}  {figures['extended_share']:8.2f}  "
                         f"{figures['tokens_per_problem']:14.1f}")
        lines.append(f"  extended share at test {test['extended_share']:.2f} against the budget q = {result['q']:g}")
    shares = result["training_last_steps"]
    if shares:
        lines.append(f"  last {shares['steps']} steps: sampled extended share {shares['sampled_extended_share']:.2f}, "
                     f"selected {shares['selected_extended_share']:.2f}")
    files = result["files"]
    lines += [f"saved: {out / 'summary.json'}, {files['model']}, {files['metrics']}"]
    if files["plots"]:
        lines.append("plots: " + ", ".join(files["plots"]))
    lines += [f"next:  ibpo-fast eval --checkpoint={out}                      # more test problems, per level",
              f"       ibpo-fast eval --checkpoint={out} --prompt_format=sv   # forced voting (or regular)",
              f"       ibpo-fast eval --checkpoint={out} --method=sc --k=4    # self-consistency of regular answers"]
    return lines
