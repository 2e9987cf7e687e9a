"""The efficiency frontier on the tiny default (DESIGN §1): accuracy against inference cost, IBPO at each
budget q against self-consistency of the same-steps RL model at q = 0, with the allocation by difficulty.

    python -m benchmarks frontier --out bench_out/frontier                 # seeds 0 1 2 at once: 17 min on 2 cores
    python -m benchmarks frontier --out bench_out/frontier --seeds 0 --jobs 1
    python -m benchmarks frontier --quick --out /tmp/frontier             # plumbing only, tiny sizes

Per seed, from one warm-up model (the tiny preset with `--steps 0`), every trained method runs the same
number of steps with the preset's settings (`--init_from` the warm-up model):
  rl_q0       IBPO at q = 0: regular answers only, the fair 1x point; its SC@k curve is the comparator
  ibpo_q<q>   IBPO at q in --budgets (0.25, 0.5, 0.75)
  sv_sft      SFT on voting demonstrations (SV-SFT); asv_sft: regular below the hard level, voting from it
and every model answers the same held-out test problems (--problems-per-level per level):
  adaptive    the ASV prompt, one answer (the model chooses its format): each method's frontier point
  regular/sv  the forced formats: the 1x cost (rl_q0's regular tokens per problem), forced voting, and each
              IBPO model's uniform mix (1 - s) acc_regular + s acc_sv at its own test extended share s
  sc@k        rl_q0's first k of --sc-samples regular answers, majority vote, cost = all k answers
Cost = tokens per problem / rl_q0's forced-regular tokens per problem (the paper's budget multiplier).
Reported per IBPO budget: the SC accuracy at the same cost (the SC curve interpolated; beyond SC@max it is
not extrapolated), the paper's ratio (IBPO's gain over rl_q0 / SC's gain at the same cost), the allocation
gain over the uniform mix, the extended share by level, and budget adherence (selected and sampled extended
shares over the last third of the training steps, and the test share, against q). The task check: forced
sv - regular accuracy on the easiest and hardest level, for the warm-up and the rl_q0 model.

Writes DIR/frontier.json (rows, checks, every seed's raw figures), DIR/frontier.md (tables) and PNGs:
frontier.png, frontier_allocation.png, frontier_budget.png. Seeds run in parallel processes (--jobs), one
thread each; a seed whose folder already holds a method's model.pt reuses it.
"""
from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import yaml

from benchmarks.common import environment, format_table, save_figure

EVAL_SEED = 1234  # the held-out problems and the evaluation draws: the same for every method and seed
QUICK = dict(warmup_steps=30, warmup_batch=8, steps=2, prompts_per_step=4, samples_per_prompt=6, max_new_tokens=48)


def _methods(budgets, skip=()) -> dict[str, dict]:
    methods = {"rl_q0": {"mode": "ibpo", "q": 0.0}}
    methods.update({f"ibpo_q{q:g}": {"mode": "ibpo", "q": q} for q in budgets})
    methods.update({"sv_sft": {"mode": "sft", "sft_format": "sv"}, "asv_sft": {"mode": "sft", "sft_format": "asv"}})
    return {name: settings for name, settings in methods.items() if name not in skip}


def _train(folder: Path, overrides: dict) -> None:
    from ibpo_fast.train import TrainConfig, train
    from ibpo_fast.train.config import load_config

    if (folder / "model.pt").is_file():
        return
    cfg = load_config(TrainConfig, preset="tiny", overrides={**overrides, "out": str(folder), "progress": False,
                                                               "tensorboard": False, "summary_problems_per_level": 0,
                                                               "overwrite": True})
    train(cfg)


def _answers(folder: Path, fmt: str, n: int, problems_per_level: int):
    import torch

    from ibpo_fast.rollout import make_task
    from ibpo_fast.train.evaluate import answer, load_trained, test_problems

    model, tokenizer, cfg = load_trained(str(folder), torch.device("cpu"))
    task = make_task(cfg.task, cfg.levels)
    problems = test_problems(task, cfg, problems_per_level, EVAL_SEED)
    return task, problems, answer(model, tokenizer, task, problems, fmt, n, cfg=cfg, max_new_tokens=cfg.max_new_tokens,
                                  temperature=1.0, seed=EVAL_SEED, progress=False)


def _figures(problems, correct, extended, tokens) -> dict:
    from ibpo_fast.train.evaluate import summarize

    return summarize(problems, correct, extended, tokens, regular_tokens=float("nan"))


def _training_shares(folder: Path) -> dict:
    """The training shares over the last third of the steps (budget adherence once the policy has moved)."""
    from ibpo_fast.train.summary import training_shares

    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return training_shares(records, max(1, len(records) // 3))


def run_seed(seed: int, args) -> dict:
    """Train every method of one seed and evaluate it; -> {model: {eval name: figures}}."""
    import torch

    torch.set_num_threads(args.threads)
    folder = Path(args.out) / f"seed{seed}"
    base = {"seed": seed, **(QUICK if args.quick else {}), **({"steps": args.steps} if args.steps else {}),
            **{key: yaml.safe_load(value) for key, value in (setting.split("=", 1) for setting in args.set)}}
    _train(folder / "warm", {**base, "steps": 0})
    methods = _methods(args.budgets, args.skip)
    for name, settings in methods.items():
        _train(folder / name, {**base, **settings, "warmup_steps": 0, "init_from": str(folder / "warm" / "model.pt")})
    ppl = args.problems_per_level
    plan = {"warm": [("regular", 1), ("sv", 1)], "rl_q0": [("asv", 1), ("regular", args.sc_samples), ("sv", 1)],
            **{name: [("asv", 1), ("regular", 1), ("sv", 1)] for name in methods if name.startswith("ibpo")},
            **{name: [("asv", 1)] for name in ("sv_sft", "asv_sft") if name in methods}}
    result = {}
    for name, evals in plan.items():
        result[name] = {}
        for fmt, n in evals:
            task, problems, answers = _answers(folder / name, fmt, n, ppl)
            result[name][fmt] = _figures(problems, answers.correct[:, 0], answers.extended[:, 0], answers.tokens[:, 0])
            if n > 1:  # self-consistency from prefixes of the same independent answers
                from ibpo_fast.train.evaluate import self_consistency

                for k in args.sc_k:
                    correct, tokens = self_consistency(task, problems, answers, k)
                    result[name][f"sc@{k}"] = _figures(problems, correct, np.zeros(len(problems), bool), tokens)
        if name.startswith(("ibpo", "rl")):
            result[name]["training"] = _training_shares(folder / name)
    (folder / "results.json").write_text(json.dumps(result, indent=1))
    return result


def _sc_at(cost: float, curve: list[tuple[float, float]]) -> float:
    """SC accuracy at `cost` on the piecewise-linear curve [(cost, accuracy)], NaN outside its range."""
    costs, accs = zip(*sorted(curve))
    return float(np.interp(cost, costs, accs)) if costs[0] <= cost <= costs[-1] else float("nan")


def _point(res: dict, fmt: str, unit: float) -> dict:
    figures = res[fmt]
    return {"accuracy": figures["accuracy"], "cost": figures["tokens_per_problem"] / unit,
            "extended_share": figures["extended_share"],
            **{f"L{lvl}_acc": v["accuracy"] for lvl, v in figures["levels"].items()},
            **{f"L{lvl}_ext": v["extended_share"] for lvl, v in figures["levels"].items()}}


def seed_rows(res: dict, args) -> tuple[list[dict], dict]:
    """Frontier points of one seed (method rows) and its checks."""
    unit = res["rl_q0"]["regular"]["tokens_per_problem"]
    curve = [(1.0, res["rl_q0"]["regular"]["accuracy"])]
    curve += [(res["rl_q0"][f"sc@{k}"]["tokens_per_problem"] / unit, res["rl_q0"][f"sc@{k}"]["accuracy"]) for k in args.sc_k]
    rows = [{"method": "rl_q0", **_point(res["rl_q0"], "asv", unit)},
            {"method": "rl_q0 forced sv", **_point(res["rl_q0"], "sv", unit)}]
    rows += [{"method": f"rl_q0 sc@{k}", **_point(res["rl_q0"], f"sc@{k}", unit)} for k in args.sc_k]
    base = res["rl_q0"]["asv"]["accuracy"]
    for name in [m for m in res if m.startswith("ibpo")]:
        row = {"method": name, **_point(res[name], "asv", unit)}
        share = row["extended_share"]
        mix = (1 - share) * res[name]["regular"]["accuracy"] + share * res[name]["sv"]["accuracy"]
        sc = _sc_at(row["cost"], curve)
        row.update({"sc_at_cost": sc, "vs_sc": row["accuracy"] - sc,
                    "gain_ratio": (row["accuracy"] - base) / (sc - base) if sc - base > 1e-9 else float("nan"),
                    "uniform_mix": mix, "allocation_gain": row["accuracy"] - mix,
                    "train_selected_share": res[name]["training"]["selected_extended_share"],
                    "train_sampled_share": res[name]["training"]["sampled_extended_share"]})
        rows.append(row)
    rows += [{"method": name, **_point(res[name], "asv", unit)} for name in ("sv_sft", "asv_sft") if name in res]
    levels = sorted(res["warm"]["regular"]["levels"], key=int)
    checks = {f"{model} sv-regular L{lvl}": res[model]["sv"]["levels"][lvl]["accuracy"]
              - res[model]["regular"]["levels"][lvl]["accuracy"] for model in ("warm", "rl_q0")
              for lvl in (levels[0], levels[-1])}
    return rows, checks


def aggregate(per_seed: list[list[dict]]) -> list[dict]:
    """Mean and min-max over seeds of every numeric column, per method."""
    out = []
    for i, first in enumerate(per_seed[0]):
        row = {"method": first["method"], "seeds": len(per_seed)}
        for key in first:
            if key == "method":
                continue
            values = np.array([rows[i][key] for rows in per_seed], float)
            row[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
            row[f"{key}_min"], row[f"{key}_max"] = (float(np.nanmin(values)), float(np.nanmax(values))) \
                if np.isfinite(values).any() else (float("nan"), float("nan"))
        out.append(row)
    return out


def _cell(row: dict, key: str) -> str:
    if key not in row or not np.isfinite(row[key]):
        return ""
    if row["seeds"] > 1:
        return f"{row[key]:.2f} ({row[key + '_min']:.2f}–{row[key + '_max']:.2f})"
    return f"{row[key]:.2f}"


def tables(rows: list[dict], checks: dict) -> str:
    levels = sorted({key[1:-4] for row in rows for key in row if key.startswith("L") and key.endswith("_acc")})
    columns = ["accuracy", "cost", "extended_share", *[f"L{lvl}_ext" for lvl in levels], *[f"L{lvl}_acc" for lvl in levels]]
    frontier = [{"method": r["method"], **{c: _cell(r, c) for c in columns}} for r in rows]
    ibpo = [{"method": r["method"], **{c: _cell(r, c) for c in ("accuracy", "cost", "sc_at_cost", "vs_sc", "gain_ratio",
                                                                 "uniform_mix", "allocation_gain", "train_selected_share",
                                                                 "train_sampled_share", "extended_share")}}
            for r in rows if r["method"].startswith("ibpo")]
    check_rows = [{"check": name, "value (mean, min–max)": f"{np.mean(v):.3f} ({min(v):.3f}–{max(v):.3f})"}
                  for name, v in checks.items()]
    return "\n\n".join([format_table(frontier, ["method", *columns]),
                        format_table(ibpo, list(ibpo[0]) if ibpo else ["method"]),
                        format_table(check_rows, ["check", "value (mean, min–max)"])])


def plots(out: Path, rows: list[dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {r["method"]: r for r in rows}
    paths = []
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    sc = [by["rl_q0"]] + [r for r in rows if "sc@" in r["method"]]
    ax.plot([r["cost"] for r in sc], [r["accuracy"] for r in sc], "o-", color="gray", label="SC@k of rl_q0 (k = 1, ...)")
    for r in rows:
        if "sc@" in r["method"]:
            continue
        xerr = [[r["cost"] - r.get("cost_min", r["cost"])], [r.get("cost_max", r["cost"]) - r["cost"]]]
        yerr = [[r["accuracy"] - r.get("accuracy_min", r["accuracy"])], [r.get("accuracy_max", r["accuracy"]) - r["accuracy"]]]
        ax.errorbar(r["cost"], r["accuracy"], xerr=xerr, yerr=yerr, fmt="s" if r["method"].startswith("ibpo") else "^",
                    capsize=3, label=r["method"])
    ax.set(xlabel="cost (tokens per problem / rl_q0's regular tokens)", ylabel="accuracy (held-out)",
           title="efficiency frontier (mean, min–max over seeds)")
    paths.append(save_figure(fig, ax, out / "frontier.png", legend_fontsize=7))
    ibpo = [r for r in rows if r["method"].startswith("ibpo")]
    levels = sorted({key[1:-4] for key in rows[0] if key.startswith("L") and key.endswith("_ext")}, key=int)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in ibpo + [by[name] for name in ("asv_sft",) if name in by]:
        ax.plot(levels, [r[f"L{lvl}_ext"] for lvl in levels], "o-", label=r["method"])
    ax.set(xlabel="level", ylabel="extended share at test", title="allocation by difficulty", ylim=(-0.02, 1.02))
    paths.append(save_figure(fig, ax, out / "frontier_allocation.png"))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    budgets = [float(r["method"].removeprefix("ibpo_q")) for r in ibpo]
    for key, label in (("train_selected_share", "selected (ILP) in training"),
                       ("train_sampled_share", "sampled by the policy in training"), ("extended_share", "at test")):
        ax.plot(budgets, [r[key] for r in ibpo], "o-", label=label)
    ax.plot(budgets, budgets, "k--", label="q")
    ax.set(xlabel="budget q", ylabel="extended share", title="budget adherence")
    paths.append(save_figure(fig, ax, out / "frontier_budget.png"))
    return paths


def _seed_job(seed_and_args):
    seed, args = seed_and_args
    return run_seed(seed, args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks frontier", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_out/frontier")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--steps", type=int, default=0, help="steps of every trained method (0: the preset's)")
    parser.add_argument("--problems-per-level", type=int, default=1024)
    parser.add_argument("--sc-samples", type=int, default=8)
    parser.add_argument("--sc-k", type=int, nargs="+", default=[2, 3, 4, 6, 8])
    parser.add_argument("--jobs", type=int, default=3, help="seeds trained in parallel, one thread each")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per seed")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="TrainConfig fields for every run (YAML values), e.g. --set lr=1e-3 explore_per_group=2")
    parser.add_argument("--skip", nargs="*", default=[], choices=["sv_sft", "asv_sft"], help="methods left out")
    parser.add_argument("--quick", action="store_true", help="one seed, a few steps, tiny evals: plumbing only")
    parser.add_argument("--device", default="cpu", help="cpu (the tiny model trains on CPU cores)")
    args = parser.parse_args(argv)
    if args.device != "cpu":
        raise SystemExit("frontier: the tiny default trains on the CPU; --device must be cpu")
    if args.quick:
        args.seeds, args.problems_per_level, args.sc_samples, args.sc_k, args.budgets = [0], 4, 3, [2, 3], [0.5]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    jobs = [(seed, args) for seed in args.seeds]
    if args.jobs > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(_seed_job, jobs))
    else:
        results = [_seed_job(job) for job in jobs]
    per_seed, checks = [], {}
    for res in results:
        rows, seed_checks = seed_rows(res, args)
        per_seed.append(rows)
        for name, value in seed_checks.items():
            checks.setdefault(name, []).append(value)
    rows = aggregate(per_seed)
    text = tables(rows, checks)
    print(f"\n## frontier\n{text}\n")
    (out / "frontier.md").write_text(text + "\n")
    path = out / "frontier.json"
    path.write_text(json.dumps({"suite": "frontier", "environment": environment(), "rows": rows, "checks": checks,
                                "seeds": dict(zip(map(str, args.seeds), results))}, indent=1))
    plots(out, rows)
    return path


if __name__ == "__main__":
    main()
