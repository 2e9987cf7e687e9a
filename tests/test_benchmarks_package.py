"""The benchmarks measure the package the tests import (the installed one, compiled extension included), also
when started from the repository root, where ``python -m`` puts the source tree first on sys.path; and their
entry point's --help works."""
import json
import subprocess
import sys
from pathlib import Path

import ibpo_fast
from ibpo_fast import ops

ROOT = Path(__file__).resolve().parents[1]


def from_root(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_suites_import_the_installed_package_from_the_repository_root():
    probe = ("import json, benchmarks.common as c, ibpo_fast; from ibpo_fast import ops; "
             "print(json.dumps([ibpo_fast.__file__, ops.native_available(), c.package_note()]))")
    done = from_root("-c", probe)
    assert done.returncode == 0, done.stderr
    package_file, native, note = json.loads(done.stdout.splitlines()[-1])
    assert Path(package_file).resolve() == Path(ibpo_fast.__file__).resolve()
    assert native == ops.native_available()
    assert ("native backend: built" in note) == native and ("ABSENT" in note) == (not native), note


def test_help_exits_zero():
    done = from_root("-m", "benchmarks", "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: python -m benchmarks" in done.stdout and "compile" in done.stdout
    assert from_root("-m", "benchmarks", "nonsense").returncode != 0


def test_compile_and_accuracy_suites_quick(tmp_path):
    """The plumbing of the two kernel suites without a GPU: their JSON rows (values are tests/test_triton_compile.py's
    and tests/test_ops_real_vocab.py's business)."""
    sys.path.append(str(ROOT))  # after site-packages: the installed ibpo_fast still wins
    from benchmarks.__main__ import main

    main(["compile", "--quick", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "compile.json").read_text())["rows"]
    assert {r["kernel"] for r in rows} == {"_logprob_fwd_kernel", "_fwd_d_hidden_kernel", "_d_weight_kernel"}
    assert all(r["default"] and r["stack_B"] == 0 and r["gflop_row"] > 0 and r["mb_row"] > 0 for r in rows), rows
    main(["accuracy", "--quick", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "accuracy.json").read_text())["rows"]
    assert {"plain f32", "torch"} <= {r["backend"] for r in rows}
    assert all(0 < r["token_logp"] < 1e-4 for r in rows), rows
