"""One entry point for every benchmark suite.

    python -m benchmarks <suite> [--out DIR] [--device cpu|cuda] [--quick] [suite options ...]
    python -m benchmarks all --out bench_out --quick          # every suite in turn
    python -m benchmarks compile --out bench_out               # the Triton kernels' ptxas resources, no GPU
    python -m benchmarks accuracy --out bench_out              # log-prob / gradient error at real vocabularies

Each suite writes ``DIR/<suite>.json`` (environment, exact command, rows), ``DIR/<suite>.md`` (the printed
table) and PNG plots; ``python -m benchmarks <suite> --help`` lists its own options. `grouper` and `ilp` are
CPU algorithms (numba, HiGHS): for them ``--device`` must be cpu, and ``--quick`` means one small size, one
repeat.
"""
from __future__ import annotations

import importlib
import sys

SUITES = {"kernels": "benchmarks.kernels", "train": "benchmarks.train", "grouper": "benchmarks.grouper",
          "ilp": "benchmarks.ilp", "compile": "benchmarks.compile", "accuracy": "benchmarks.accuracy",
          "frontier": "benchmarks.frontier"}
CPU_ONLY_QUICK = {"grouper": ["--sizes", "1000", "--repeats", "1"], "ilp": ["--sizes", "1024", "--repeats", "1"]}


def _cpu_only_args(suite: str, argv: list[str]) -> list[str]:
    """Translate the shared flags for a suite whose own parser knows only --out and its sizes."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--quick":
            out += CPU_ONLY_QUICK[suite]
        elif arg == "--device" or arg.startswith("--device="):
            device = _device(argv[i:])
            i += 0 if "=" in arg else 1
            if device != "cpu":
                raise SystemExit(f"{suite}: a CPU suite; --device {device} is not supported")
        else:
            out.append(arg)
        i += 1
    return out


def _device(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg.startswith("--device="):
            return arg.partition("=")[2]
        if arg == "--device" and i + 1 < len(argv):
            return argv[i + 1]
    return "cpu"


def run(suite: str, argv: list[str]):
    module = importlib.import_module(SUITES[suite])
    return module.main(_cpu_only_args(suite, argv) if suite in CPU_ONLY_QUICK else argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    usage = (f"usage: python -m benchmarks {{{','.join(SUITES)},all}} [--out DIR] [--device cpu|cuda] [--quick] "
             f"[suite options]\n\n{__doc__}")
    if argv[:1] in (["-h"], ["--help"]):
        print(usage)
        return None
    if not argv or argv[0] not in (*SUITES, "all"):
        raise SystemExit(usage)
    suite, rest = argv[0], argv[1:]
    if suite != "all":
        return run(suite, rest)
    for name in SUITES:
        if name in (*CPU_ONLY_QUICK, "frontier") and _device(rest) != "cpu":
            print(f"\n# {name}: skipped (a CPU suite)")
            continue
        print(f"\n# {name}", flush=True)
        run(name, rest)


if __name__ == "__main__":
    main()
