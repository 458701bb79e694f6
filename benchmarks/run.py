#!/usr/bin/env python
"""nv-datalad's speed claims, measured side by side on one emulated NeuroVault per case.

    python benchmarks/run.py --quick            # the small case only: ~2-3 minutes on 2 cores
    python benchmarks/run.py --out results.md   # small, ≈750-image and 5,000-image cases

The bundled emulator (``bench`` corpus, loopback only) serves every case with a realistic
network profile (100 ms per request, 10 MB/s per connection). ``scenarios`` runs the contenders
of each case, ``resampling`` the resampling comparison, ``profiling`` one fresh build under
cProfile, ``report`` renders the Markdown (tables of absolute times, then every ratio with its
target and verdict). ``measure`` times each contender in its own subprocess; ``workers`` holds
the contenders that are Python functions.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import profiling
import report
from measure import bench_env, log, rmtree
from resampling import resampling
from scenarios import Case, Setup, large_case, run_case, scale_case, small_case


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="the small case and a 300-image scaling case only (same network)")
    p.add_argument("--large", type=int, default=None, metavar="N",
                   help="bench corpus of the second side-by-side case (default 1000, which "
                        "selects ≈750 images; quick and 0: skip it)")
    p.add_argument("--scale", default=None, metavar="LIST",
                   help="comma-separated bench corpus sizes of the scaling cases: fresh build, "
                        "plain download, no-op, updates (default 5000; quick 300)")
    p.add_argument("--resample-images", type=int, default=None,
                   help="2 mm volumes for the resampling comparison (default 120; quick 16)")
    p.add_argument("--latency", type=float, default=0.1, help="seconds per request (0.1)")
    p.add_argument("--bandwidth", type=float, default=10e6,
                   help="bytes per second per connection (10e6)")
    p.add_argument("-J", "--jobs", type=int, default=8,
                   help="connections / build jobs of the parallel contenders (8)")
    p.add_argument("--no-resample", action="store_true", help="skip the resampling comparison")
    p.add_argument("--no-profile", action="store_true", help="skip the per-stage profile")
    p.add_argument("--profile-only", action="store_true",
                   help="only the per-stage profile of a fresh build of the small case")
    p.add_argument("--out", type=Path, help="also write the Markdown report here")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--raw", type=Path, help="also save the raw measurements as JSON here")
    p.add_argument("--render-raw", type=Path, metavar="JSON",
                   help="measure nothing: re-render the report from a --raw file")
    args = p.parse_args(argv)
    if args.large is None:
        args.large = 0 if args.quick else 1000
    if args.scale is None:
        args.scale = "300" if args.quick else "5000"
    args.sizes = sorted({int(s) for s in args.scale.split(",") if s.strip()} - {args.large})
    if args.resample_images is None:
        args.resample_images = 16 if args.quick else 120
    return args


def cases(args: argparse.Namespace) -> list[Case]:
    out = [small_case()]
    if args.large > 0:
        out.append(large_case(args.large))
    return out + [scale_case(n) for n in args.sizes]


def emit(text: str, out: Path | None) -> None:
    sys.stdout.write(text)
    if out is not None:
        out.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    args = parse_args(argv)
    if args.render_raw:
        emit(report.render(json.loads(args.render_raw.read_text())), args.out)
        return 0
    profiling.check_stages()  # a stale stage list stops the run before anything is measured
    setup = Setup(args.latency, args.bandwidth, args.jobs)
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="nv-bench-"))
    try:
        home = scratch / "home"
        home.mkdir()
        env = bench_env(home)
        os.environ.update({k: env[k] for k in ("PATH", "GIT_CONFIG_GLOBAL", "HOME")})
        info = report.machine()
        runs = [] if args.profile_only else [run_case(c, setup, scratch, env) for c in cases(args)]
        res = None
        if not (args.no_resample or args.profile_only):
            res = resampling(args.resample_images, scratch, env, (1, 2))
        prof = None
        if args.profile_only or not args.no_profile:
            prof = profiling.profile_build(small_case(), setup, scratch, env)
        raw = {"meta": {"info": info, "setup": asdict(setup),
                        "mode": "quick" if args.quick else "full",
                        "elapsed": time.perf_counter() - started},
               "cases": [asdict(r) for r in runs],
               "resample": asdict(res) if res else None,
               "profile": prof}
        if args.raw:
            args.raw.write_text(json.dumps(raw, indent=1))
        text = report.render(raw)
    finally:
        if args.keep:
            log.info("scratch kept in %s", scratch)
        else:
            rmtree(scratch)
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
