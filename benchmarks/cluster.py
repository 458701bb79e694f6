"""The cluster case on one node: 4 array tasks against one machine with -J 8 (issue 15).

Same spec, same emulated network (100 ms per request, 10 MB/s per connection), one run side
by side: a single-machine build, ``--local-array --tasks 4`` and, when SLURM answers,
``--slurm --tasks 4 --wait``. A cluster build pays for the store (push, clones, the merge,
the checks) and, on SLURM, for scheduling; on one node it cannot be faster, so what this
measures is the overhead per task that more nodes must win back.

    .venv/bin/python benchmarks/cluster.py [--images 200]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLI = [sys.executable, "-m", "nv_datalad.cli", "-q", "build"]
TASKS = 4


def _timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    from nv_datalad.emulator import Emulator

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200, help="size of the bench corpus")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nv-cluster-bench-") as tmp, \
            Emulator(corpus="bench", n_images=args.images, port=0) as emu:
        work = Path(tmp)
        emu.set_network(latency=0.1, bandwidth=10_000_000)
        spec = work / "spec.yaml"
        spec.write_text(yaml.safe_dump({"name": "nv-bench", "server": emu.url,
                                        "max_images": None,
                                        "ria": {"store": f"ria+file://{work / 'store'}"}}))
        single = _timed([*CLI, str(spec), "-d", str(work / "single"), "-J", "8"])
        n = sum(1 for _ in (work / "single" / "neurovault").glob("*/image_*_metadata.json"))
        rows.append(("one machine, -J 8", single))
        runs = [("--local-array", "local array, 4 tasks")]
        if shutil.which("sbatch") and subprocess.run(["sinfo", "-h"], capture_output=True,
                                                     timeout=30).returncode == 0:
            runs.append(("--slurm", "SLURM array, 4 tasks (single node)"))
        for flag, name in runs:
            argv = [*CLI, str(spec), "-d", str(work / flag.strip("-")), flag,
                    "--tasks", str(TASKS), *(["--wait"] if flag == "--slurm" else [])]
            rows.append((name, _timed(argv)))
    print(f"{n} images, 100 ms per request, 10 MB/s per connection, {TASKS} tasks")
    print("| build | seconds | × one machine | overhead per task (s) |")
    print("|---|---|---|---|")
    for name, seconds in rows:
        extra = "" if seconds is single else f"{(seconds - single) / TASKS:.1f}"
        print(f"| {name} | {seconds:.1f} | {seconds / single:.2f} | {extra} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
