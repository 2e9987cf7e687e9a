"""The `ibpo-fast` command: train, eval, plot.

    ibpo-fast train --preset tiny --steps 3 --out runs/tiny       # any TrainConfig field as --key=value
    ibpo-fast eval --checkpoint runs/tiny                        # EvalConfig fields as --key=value
    ibpo-fast plot --metrics runs/tiny/metrics.jsonl --out runs/tiny
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
    args, rest = parser.parse_known_args(argv)
    if args.command == "plot":
        if rest:
            parser.error(f"plot: unknown arguments {rest}")
        from ibpo_fast.plot import plot as draw
        print("\n".join(map(str, draw(args.metrics, args.out))))
        return 0
    from ibpo_fast.train.config import EvalConfig, TrainConfig, load_config
    try:
        cfg = load_config(TrainConfig if args.command == "train" else EvalConfig, preset=args.preset, overrides=rest)
    except ValueError as e:
        parser.error(str(e))
    if args.command == "train":
        from ibpo_fast.train.loop import train as run_training
        run = run_training(cfg)
        if run.stopped_at is not None and run.world.is_main:
            why = "interrupted" if run.interrupted else f"stopped (stop_after={cfg.stop_after})"
            print(f"{why}: checkpoint at step {run.stopped_at} in {run.out}; resume with --resume=true", file=sys.stderr)
        return 130 if run.interrupted else 0
    from ibpo_fast.train.evaluate import evaluate as run_eval
    print(json.dumps(run_eval(cfg), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
