"""The `ibpo-fast` command: train, eval, plot.

    ibpo-fast train --preset tiny --steps 3 --out runs/tiny       # any TrainConfig field as --key=value
    ibpo-fast eval --checkpoint runs/tiny                        # EvalConfig fields as --key=value
    ibpo-fast plot --metrics runs/tiny/metrics.jsonl --out runs/tiny
    ibpo-fast plan --preset llama8b --gpus 8 --gpu_memory_gib 80     # per-rank memory; TrainConfig --key=value
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ibpo-fast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", allow_abbrev=False, help="train (IBPO, RFT or SFT); unknown --key=value set config fields")
    train.add_argument("--preset", default="tiny", help="configs/NAME.yaml or a YAML path (default: tiny)")
    evaluate = commands.add_parser("eval", allow_abbrev=False, help="score a trained model; --key=value set EvalConfig fields")
    evaluate.add_argument("--preset", default=None, help="optional YAML with EvalConfig fields")
    plot = commands.add_parser("plot", help="budget-adherence and allocation PNGs from metrics.jsonl")
    plot.add_argument("--metrics", required=True)
    plot.add_argument("--out", required=True)
    plan = commands.add_parser("plan", allow_abbrev=False, help="per-rank GPU memory of a preset and whether it fits")
    plan.add_argument("--preset", default="tiny", help="configs/NAME.yaml or a YAML path (default: tiny)")
    plan.add_argument("--gpus", type=int, required=True, help="processes (one GPU each)")
    plan.add_argument("--gpu_memory_gib", type=float, required=True, help="memory of one GPU")
    plan.add_argument("--prompt_tokens", type=int, default=512, help="prompt length assumed (default: 512)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "plot":
        if rest:
            parser.error(f"plot: unknown arguments {rest}")
        from ibpo_fast.plot import plot as draw
        print("\n".join(map(str, draw(args.metrics, args.out))))
        return 0
    from ibpo_fast.train.config import EvalConfig, TrainConfig, load_config
    try:
        cfg = load_config(EvalConfig if args.command == "eval" else TrainConfig, preset=args.preset, overrides=rest)
        if args.command == "plan":
            from ibpo_fast.train.plan import plan as memory_plan
            print(memory_plan(cfg, gpus=args.gpus, gpu_memory_gib=args.gpu_memory_gib,
                              prompt_tokens=args.prompt_tokens).format())
            return 0
    except ValueError as e:
        parser.error(str(e))
    if args.command == "train":
        from ibpo_fast.train.loop import train as run_training
        run = run_training(cfg)
        if run.world.is_main:
            print(f"metrics: {run.out / 'metrics.jsonl'}")
        return 0
    from ibpo_fast.train.evaluate import evaluate as run_eval
    print(json.dumps(run_eval(cfg), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
