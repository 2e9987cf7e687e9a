"""The `ibpo-fast` command: one subcommand per job, each parsing its own arguments (`ibpo-fast CMD --help`).

    ibpo-fast train --preset tiny --steps 3 --out runs/tiny       # any TrainConfig field as --key=value
    ibpo-fast eval --checkpoint runs/tiny                        # EvalConfig fields as --key=value
    ibpo-fast plot --metrics runs/tiny/metrics.jsonl --out runs/tiny
    ibpo-fast plan --preset llama8b --gpus 8 --gpu_memory_gib 80     # per-rank memory; TrainConfig --key=value

A subcommand is one line of COMMANDS: its help and the "module:function" that runs it, imported only when
chosen (`function(argv, prog) -> exit status`), so no command pays for another's imports.
"""
from __future__ import annotations

import argparse
import sys
from importlib import import_module

COMMANDS = {
    "train": ("train (IBPO, RFT or SFT); every TrainConfig field as --key=value", "ibpo_fast.train.command:train_main"),
    "eval": ("score a trained model per difficulty level; EvalConfig fields as --key=value",
             "ibpo_fast.train.command:eval_main"),
    "plot": ("PNGs of a run's metrics.jsonl or warmup.jsonl", "ibpo_fast.plot:main"),
    "plan": ("per-rank GPU memory of a preset (parameters, gradients, optimizer, activations, KV cache) and whether "
             "it fits", "ibpo_fast.train.command:plan_main"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ibpo-fast", description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     epilog=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, _) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)  # its own parser answers --help
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    module, function = COMMANDS[args.command][1].split(":")
    return getattr(import_module(module), function)(rest, f"ibpo-fast {args.command}")


if __name__ == "__main__":
    sys.exit(main())
