"""The benchmark's peak-memory figure is the contender's own, not the benchmark's.

Linux folds the exec-ing process's high-water mark into the new program's ``ru_maxrss``, so a
benchmark that holds the emulator (hundreds of MB at 5,000 images) used to report its own size
for every contender. ``benchmarks/measure.py`` starts contenders through ``launch.py``; these
tests run it from a deliberately large process and check what it reports.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

MB = 1 << 20
#: benchmarks/ is a directory of scripts, not a package: load its module by path.
_SPEC = importlib.util.spec_from_file_location(
    "bench_measure", Path(__file__).resolve().parents[1] / "benchmarks" / "measure.py")
assert _SPEC is not None and _SPEC.loader is not None
measure = sys.modules["bench_measure"] = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(measure)


def _allocate(megabytes: int) -> bytearray:
    block = bytearray(megabytes * MB)
    for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
        block[i] = 1
    return block


@pytest.fixture
def big_parent() -> bytearray:
    """This process made 300 MB larger than any contender below."""
    return _allocate(300)


def _child_allocating(megabytes: int) -> list[str]:
    code = (f"b = bytearray({megabytes} * {MB})\n"
            "for i in range(0, len(b), 4096): b[i] = 1\n")
    return [sys.executable, "-c", code]


def test_peak_rss_is_the_contenders_own_not_the_benchmarks(
        big_parent: bytearray, tmp_path: Path) -> None:
    small = measure.measure("small child", 0, _child_allocating(20), dict(os.environ),
                            tmp_path)
    large = measure.measure("large child", 0, _child_allocating(120), dict(os.environ),
                            tmp_path)
    assert small.ok and large.ok
    assert 20 <= small.peak_rss_mb < 100, small.peak_rss_mb  # the parent holds 300 MB more
    assert large.peak_rss_mb >= 120
    assert large.peak_rss_mb - small.peak_rss_mb >= 90  # the difference the children made


def test_a_failing_contender_is_reported_failed(tmp_path: Path) -> None:
    m = measure.measure("failing child", 0, [sys.executable, "-c", "raise SystemExit(3)"],
                        dict(os.environ), tmp_path)
    assert not m.ok
