"""The `train` and `eval` commands: a command line -> a checked config -> the run.

    python -m ibpo_fast.train --preset tiny --steps 3 --out runs/x    # = ibpo-fast train ...; what torchrun starts
    ibpo-fast train --help                                            # every TrainConfig field, from its docstring
    ibpo-fast eval --checkpoint runs/x

What the command line can get wrong (an unknown key, a value of the wrong type, a broken rule, a run folder
that holds another run) is checked before torch is imported, so it is reported at once; errors in the
inputs found later (a task file, a model folder) are reported in one line too, before any folder is made.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ibpo_fast.errors import InputError
from ibpo_fast.train import run_folder
from ibpo_fast.train.config import EvalConfig, TrainConfig, load_config, preset_values
from ibpo_fast.train.config_schema import help_text


def config_parser(cls, prog: str, default_preset: str | None, argv: list[str]) -> argparse.ArgumentParser:
    """`--preset` plus a help listing every field of `cls`, with the values of the preset named in `argv`."""
    preset = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    preset.add_argument("--preset", default=default_preset,
                        help=f"configs/NAME.yaml or a YAML path (default: {default_preset or 'none'})")
    chosen = preset.parse_known_args(argv)[0].preset
    try:
        values = preset_values(chosen)
    except ValueError:  # reported by read_config, with the usage line
        values = {}
    return argparse.ArgumentParser(
        prog=prog, parents=[preset], allow_abbrev=False, usage=f"{prog} [-h] [--preset PRESET] [--KEY=VALUE ...]",
        epilog=help_text(cls, values, chosen), formatter_class=argparse.RawDescriptionHelpFormatter)


def read_config(cls, prog: str, default_preset: str | None, argv: list[str]):
    """The config the command line asks for; a bad one exits with status 2 and a one-line error."""
    parser = config_parser(cls, prog, default_preset, argv)
    args, overrides = parser.parse_known_args(argv)
    try:
        return load_config(cls, preset=args.preset, overrides=overrides)
    except ValueError as e:
        parser.error(str(e))


def _fail(prog: str, error: InputError) -> int:
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 2


def train_main(argv: list[str] | None = None, prog: str = "python -m ibpo_fast.train") -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = read_config(TrainConfig, prog, "tiny", argv)
    try:
        # The main process owns the run folder (torchrun sets RANK); on the others the check could race
        # with its first writes.
        if os.environ.get("RANK", "0") == "0":
            run_folder.check(cfg.out, resume=cfg.resume, overwrite=cfg.overwrite)
        from ibpo_fast.train.loop import train  # torch and transformers from here on

        run = train(cfg)
    except InputError as e:
        return _fail(prog, e)
    if run.stopped_at is not None and run.world.is_main:
        why = "interrupted" if run.interrupted else f"stopped (stop_after={cfg.stop_after})"
        print(f"{why}: checkpoint at step {run.stopped_at} in {run.out}; resume with --resume=true", file=sys.stderr)
    return 130 if run.interrupted else 0


def plan_main(argv: list[str] | None = None, prog: str = "ibpo-fast plan") -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = config_parser(TrainConfig, prog, "tiny", argv)
    parser.usage = f"{prog} [-h] [--preset PRESET] --gpus N --gpu_memory_gib M [--prompt_tokens T] [--KEY=VALUE ...]"
    parser.add_argument("--gpus", type=int, required=True, help="processes (one GPU each)")
    parser.add_argument("--gpu_memory_gib", type=float, required=True, help="memory of one GPU, GiB")
    parser.add_argument("--prompt_tokens", type=int, default=512, help="prompt length assumed (default: 512)")
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load_config(TrainConfig, preset=args.preset, overrides=overrides)
    except ValueError as e:
        parser.error(str(e))
    from ibpo_fast.train.plan import plan  # torch from here on

    try:
        print(plan(cfg, gpus=args.gpus, gpu_memory_gib=args.gpu_memory_gib, prompt_tokens=args.prompt_tokens).format())
    except ValueError as e:
        parser.error(str(e))
    return 0


def eval_main(argv: list[str] | None = None, prog: str = "ibpo-fast eval") -> int:
    argv = sys.argv[1:] if argv is None else argv
    ecfg = read_config(EvalConfig, prog, None, argv)
    try:
        from ibpo_fast.train.evaluate import evaluate  # torch and transformers from here on

        result = evaluate(ecfg)
    except InputError as e:
        return _fail(prog, e)
    print(json.dumps(result, indent=1))
    return 0
