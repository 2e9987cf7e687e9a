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
