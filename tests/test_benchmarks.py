"""Smoke test of the benchmark suites: each runs at a tiny size and writes its JSON, table and plots.

Correctness of the plumbing only, never timing. ``benchmarks/`` is not part of the installed package, so the
repository root is appended to sys.path (after site-packages: the installed ibpo_fast still wins).
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from benchmarks.__main__ import main  # noqa: E402


def run_quick(suite, out_dir):
    main([suite, "--quick", "--device", "cpu", "--out", str(out_dir)])
    data = json.loads((out_dir / f"{suite}.json").read_text())
    assert data["suite"] == suite and data["rows"], data
    assert {"command", "machine", "torch"} <= set(data["environment"])
    assert (out_dir / f"{suite}.md").is_file() and list(out_dir.glob("*.png"))
    return data["rows"]


def test_kernels_quick(tmp_path):
    rows = run_quick("kernels", tmp_path)
    by_key = {(r["mode"], r["method"]): r for r in rows}
    for mode in ("fwd", "fwd+bwd"):
        for method in ("matmul_floor", "naive", "wsl[torch]", "slp[torch]", "torch_lce"):
            assert by_key[(mode, method)]["status"].startswith("ok"), by_key[(mode, method)]
        for method in ("naive", "wsl[torch]", "slp[torch]", "torch_lce"):
            row = by_key[(mode, method)]
            assert row["rel_err"] < 1e-4 and row["ms"] > 0 and row["tflops"] > 0, row
    for row in rows:  # a row that did not run says why: skipped on purpose, out of memory, or the error itself
        assert row["status"].startswith("ok") or row["status"] in ("skipped", "oom") or \
            re.fullmatch(r"[A-Za-z_]\w*(Error|Exception): \S.*", row["status"]), row


def test_train_quick(tmp_path):
    rows = run_quick("train", tmp_path)  # the step (train.json) after the engine table
    assert {r["loss"] for r in rows} == {"fused", "full", "ratio fused/full"}
    for row in rows:
        assert row["tokens"] > 0 and row["selected"] > 0, row  # the step really selected and updated
        if row["loss"] != "ratio fused/full":
            assert all(row[f"{p}_ms"] > 0 for p in ("generate", "grade", "group", "ilp", "forward_backward",
                                                    "optimizer")), row
            assert row["update_tok_s"] > 0
        else:
            assert row["loss_rel_diff"] < 1e-4, row  # the fused and the full-logits loss agree
    engines = json.loads((tmp_path / "train_engines.json").read_text())["rows"]
    assert [r["engine"] for r in engines] == ["generate@64", "generate", "decode"]
    for row in engines:
        assert row["tokens"] > 0 and row["tok_s"] > 0, row
        assert row["same"] == 1.0, row  # every engine draws the baseline's responses


@pytest.mark.parametrize("suite", ["grouper", "ilp"])
def test_cpu_suites_quick(suite, tmp_path):
    run_quick(suite, tmp_path)


def test_frontier_quick(tmp_path):
    rows = run_quick("frontier", tmp_path)
    methods = [r["method"] for r in rows]
    assert methods == ["rl_q0", "rl_q0 forced sv", "rl_q0 sc@2", "rl_q0 sc@3", "ibpo_q0.5", "sv_sft", "asv_sft"]
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and row["cost"] > 0 and row["seeds"] == 1, row
        assert {"L1_acc", "L3_acc", "L1_ext", "L3_ext"} <= set(row)
    ibpo = rows[methods.index("ibpo_q0.5")]
    assert 0 <= ibpo["train_selected_share"] <= 0.5 + 1e-9  # the ILP keeps to the budget at every step
    assert ibpo["allocation_gain"] == pytest.approx(ibpo["accuracy"] - ibpo["uniform_mix"])
    assert rows[methods.index("rl_q0 sc@3")]["cost"] > rows[methods.index("rl_q0 sc@2")]["cost"]
    data = json.loads((tmp_path / "frontier.json").read_text())
    assert set(data["checks"]) == {f"{m} sv-regular L{lvl}" for m in ("warm", "rl_q0") for lvl in (1, 3)}
    assert {p.name for p in tmp_path.glob("*.png")} == {"frontier.png", "frontier_allocation.png", "frontier_budget.png"}


def test_cpu_suite_refuses_cuda(tmp_path):
    with pytest.raises(SystemExit):
        main(["ilp", "--device", "cuda", "--out", str(tmp_path)])


@pytest.mark.parametrize("script", ["gpu_check.sh"])
def test_shell_scripts_parse(script):
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)], check=True)


def test_kernels_triton_rows_under_the_interpreter(tmp_path):
    # conftest.py sets TRITON_INTERPRET=1: the rows the GPU run produces for the triton backend, on the CPU
    main(["kernels", "--quick", "--backends", "triton", "--methods", "naive", "wsl[triton]", "slp[triton]",
          "--shapes", "40x32x300", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "kernels.json").read_text())["rows"]
    ours = [r for r in rows if r["method"].endswith("[triton]")]
    assert len(ours) == 4 and all(r["status"].startswith("ok") and r["rel_err"] < 1e-4 for r in ours), ours
