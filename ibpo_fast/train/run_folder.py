"""A run folder is never overwritten silently (DESIGN.md §5).

`ibpo-fast train --out DIR` starts a new run only in a missing or empty DIR. A DIR that holds files needs
`--resume=true` (continue from DIR/checkpoint/; with no checkpoint there the run starts at step 0, so a
job script that always passes it survives a kill before the first checkpoint) or `--overwrite=true`
(delete the previous run's files first). Overwriting deletes only what train, eval and plot write
(`RUN_OUTPUTS`); a folder holding anything else is refused, so `--out=.` cannot empty a source tree.

Light on purpose (no torch): the command line checks the folder before the heavy imports.
"""
from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

from ibpo_fast.errors import InputError

# What a run writes into its folder: metrics (jsonl), the checkpoint folder (checkpoint.tmp / .old while
# a save swaps it in), the final model (model.pt, .tmp while written), eval results (eval.json, or
# eval_*.json beside it), the summary, plots, tensorboard events.
RUN_OUTPUTS = ("metrics.jsonl", "warmup.jsonl", "checkpoint", "checkpoint.old", "model.pt", "summary.json", "*.tmp",
               "eval*.json", "*.png", "tb")


def _entries(folder: Path) -> list[Path]:
    if folder.exists() and not folder.is_dir():
        raise InputError(f"out: {str(folder)!r} is a file, not a folder")
    return sorted(folder.iterdir()) if folder.is_dir() else []


def foreign_entries(folder: str | Path) -> list[str]:
    """Names in `folder` that no run writes (they block --overwrite)."""
    return [p.name for p in _entries(Path(folder))
            if not any(fnmatch.fnmatch(p.name, pattern) for pattern in RUN_OUTPUTS)]


def check(out: str | Path, *, resume: bool, overwrite: bool) -> None:
    """Raise InputError unless a run may write into `out` (see the module docstring)."""
    folder = Path(out)
    names = [p.name for p in _entries(folder)]
    if not names or resume:
        return
    if overwrite:
        foreign = foreign_entries(folder)
        if foreign:
            raise InputError(f"out: --overwrite=true deletes only a run's own files, and {str(folder)!r} also holds "
                             f"{_listing(foreign)}; choose another --out")
        return
    raise InputError(f"out: {str(folder)!r} is not empty (it holds {_listing(names)}); pass --resume=true to "
                     f"continue that run, --overwrite=true to delete it and start afresh, or choose another --out")


def prepare(out: str | Path, *, resume: bool, overwrite: bool, is_main: bool = True) -> Path:
    """The run folder, ready to write: on the main process `check`, then delete the previous run's files
    (overwrite) and create the folder. The other processes never write there, and checking on them could
    race with the main process's first writes."""
    folder = Path(out)
    if is_main:
        check(folder, resume=resume, overwrite=overwrite)
        if overwrite:
            for entry in _entries(folder):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def _listing(names: list[str], shown: int = 4) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
