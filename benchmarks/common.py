"""Shared measurement helpers: every suite times with these, so all figures are comparable.

Timing: median over repeats after warm-up (CUDA: events around the call, synchronised). Peak memory:
on CUDA the allocator's peak above the memory held before the call; on CPU the process's peak resident
set (VmHWM, reset through /proc/self/clear_refs) above its resident set before the call.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def median_time(fn, *, repeats: int = 5, warmup: int = 1, device: str = "cpu") -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        if str(device).startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory(fn, *, device: str = "cpu") -> int:
    """Bytes of memory at the peak of ``fn()`` above what was held before it."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_kib("VmRSS")
    fn()
    return max(0, _status_kib("VmHWM") - before) * 1024


def package_note() -> str:
    """Which ibpo_fast the suites run and whether its native CPU kernels are built (see benchmarks/__init__.py)."""
    import ibpo_fast
    from ibpo_fast import ops

    where = Path(ibpo_fast.__file__).parent
    if ops.native_available():
        return f"ibpo_fast from {where}; native backend: built"
    from ibpo_fast.ops import native

    return (f"NOTE: the native backend is ABSENT, its rows are skipped and 'auto' on CPU is the torch backend: "
            f"{native.unavailable_reason()}")


def environment() -> dict:
    """Machine, versions and the exact command, stored with every result file."""
    env = {
        "ibpo_fast": package_note(),
        # orig_argv keeps "-m benchmarks ..." as typed (argv[0] would be the path of __main__.py)
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name,
                                                      *getattr(sys, "orig_argv", [None, *sys.argv])[1:]]),
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    for module in ("triton", "numba", "numpy", "highspy", "transformers"):
        try:
            env[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            pass
    return env


def format_table(rows: list[dict], columns: list[str]) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    cells = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def write_results(out_dir, suite: str, rows: list[dict], *, columns: list[str]) -> Path:
    """Print the table and write ``out_dir/<suite>.json`` (environment + rows); returns the JSON path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = format_table(rows, columns)
    print(f"\n## {suite}\n{table}\n")
    path = out_dir / f"{suite}.json"
    path.write_text(json.dumps({"suite": suite, "environment": environment(), "rows": rows}, indent=2))
    (out_dir / f"{suite}.md").write_text(table + "\n")
    return path


def save_partial(out_dir, suite: str, rows: list[dict]) -> Path:
    """``out_dir/<suite>.partial.json`` with the rows so far: what a run cut short (a time limit) leaves behind."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{suite}.partial.json"
    path.write_text(json.dumps({"suite": suite, "environment": environment(), "rows": rows}, indent=2))
    return path


def plots_available() -> bool:
    """Whether matplotlib is importable; suites skip their PNGs (saying so) where it is not."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is not installed: plots skipped")
        return False
    return True


def plot_lines(path, x, series: dict, *, xlabel: str, ylabel: str, title: str = "", logx=False, logy=False):
    """One PNG with a line per series (matplotlib imported here: it is only a benchmark dependency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, ys in series.items():
        points = [(a, b) for a, b in zip(x, ys) if b is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    return save_figure(fig, ax, path)


def save_figure(fig, ax, path, *, legend_fontsize=None) -> Path:
    """The suites' one look: grid, legend, tight layout, 120 dpi; the figure is closed."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_fontsize)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
