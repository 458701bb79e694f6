"""The code base stays ruff-clean (the linter runs as part of the README's test command)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    targets = [d for d in ("nv_datalad", "tests", "benchmarks") if (ROOT / d).is_dir()]
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *targets],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
