#!/usr/bin/env python
"""nv-datalad's speed claims, measured side by side on one emulated NeuroVault per case.

    python benchmarks/run.py --quick            # the small case only: ~2-3 minutes on 2 cores
    python benchmarks/run.py --out results.md   # every scenario: small, large, scale, ...
    python benchmarks/run.py --only scale       # one scenario (see --only)

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
from measure import bench_env, launcher_floor_mb, log, rmtree
from resampling import resampling
from scenarios import (
    SCALE_CORPORA,
    Case,
    Setup,
    large_case,
    run_case,
    scale_case,
    small_case,
)

#: What ``--only`` can name: the side-by-side cases, the scaling cases (no-op rebuild, updates of
#: k images, peak memory against N), the resampling comparison, the per-stage profile.
SCENARIOS = ("small", "large", "scale", "resample", "profile")


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="the small case and a 300-image scaling case only (same network)")
    p.add_argument("--large", type=int, default=None, metavar="N",
                   help="bench corpus of the second side-by-side case (default 1000, which "
                        "selects ≈750 images; quick and 0: skip it)")
    p.add_argument("--scale", default=None, metavar="LIST",
                   help="comma-separated bench corpus sizes of the scaling cases: fresh build "
                        "and no-op (time, peak memory), updates in the largest (default "
                        f"{','.join(map(str, SCALE_CORPORA))}: ≈1k, 2k, 5k images; quick 300)")
    p.add_argument("--update-k", default=None, metavar="LIST",
                   help="changed images per update in the largest scaling case, one rebuild "
                        "each (default 10,100,500; quick 2,10)")
    p.add_argument("--resample-images", type=int, default=None,
                   help="2 mm volumes for the resampling comparison (default 120; quick 16)")
    p.add_argument("--resample-rounds", type=int, default=1, metavar="R",
                   help="nilearn / -J 2 datalad-run pairs, alternating; the ratio is the "
                        "median of the pairs' (1)")
    p.add_argument("--only", default=None, metavar="LIST",
                   help=f"comma-separated scenarios to run, of {', '.join(SCENARIOS)} "
                        "(default: all)")
    p.add_argument("--latency", type=float, default=0.1, help="seconds per request (0.1)")
    p.add_argument("--bandwidth", type=float, default=10e6,
                   help="bytes per second per connection (10e6)")
    p.add_argument("--repeat", type=int, default=1, metavar="R",
                   help="runs of the short contenders (dry run, no-op rebuild); the fastest "
                        "counts, all are shown (1)")
    p.add_argument("-J", "--jobs", type=int, default=8,
                   help="connections / build jobs of the parallel contenders (8)")
    p.add_argument("--no-resample", action="store_true", help="skip the resampling comparison")
    p.add_argument("--no-profile", action="store_true", help="skip the per-stage profile")
    p.add_argument("--profile-only", action="store_true",
                   help="only the per-stage profile of a fresh build of the small case")
    p.add_argument("--profile-corpus", type=int, default=0, metavar="N",
                   help="profile builds of a bench corpus of N instead of the small case")
    p.add_argument("--profile-update", type=int, default=0, metavar="K",
                   help="also profile an update after K images changed (0: no)")
    p.add_argument("--out", type=Path, help="also write the Markdown report here")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--raw", type=Path, help="also save the raw measurements as JSON here")
    p.add_argument("--render-raw", type=Path, metavar="JSON",
                   help="measure nothing: re-render the report from a --raw file")
    args = p.parse_args(argv)
    if args.large is None:
        args.large = 0 if args.quick else 1000
    if args.scale is None:
        args.scale = "300" if args.quick else ",".join(map(str, SCALE_CORPORA))
    args.sizes = sorted(set(_ints(args.scale)) - {args.large})
    args.update_ks = tuple(_ints(args.update_k or ("2,10" if args.quick else "10,100,500")))
    if args.resample_images is None:
        args.resample_images = 16 if args.quick else 120
    want = set(SCENARIOS) if args.only is None else {s.strip() for s in args.only.split(",")}
    if want - set(SCENARIOS):
        p.error(f"--only: unknown scenario(s) {', '.join(sorted(want - set(SCENARIOS)))}")
    if args.no_resample:
        want.discard("resample")
    if args.no_profile:
        want.discard("profile")
    args.scenarios = {"profile"} if args.profile_only else want
    return args


def cases(args: argparse.Namespace) -> list[Case]:
    want, out = args.scenarios, []
    if "small" in want:
        out.append(small_case())
    if "large" in want and args.large > 0:
        out.append(large_case(args.large))
    if "scale" in want:
        top = max(args.sizes, default=0)
        out += [scale_case(n, args.update_ks if n == top else ()) for n in args.sizes]
    return out


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
    setup = Setup(args.latency, args.bandwidth, args.jobs, max(1, args.repeat))
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="nv-bench-"))
    try:
        home = scratch / "home"
        home.mkdir()
        env = bench_env(home)
        os.environ.update({k: env[k] for k in ("PATH", "GIT_CONFIG_GLOBAL", "HOME")})
        info = report.machine()
        (scratch / "logs").mkdir()
        floor = launcher_floor_mb(env, scratch / "logs")
        runs = [run_case(c, setup, scratch, env) for c in cases(args)]
        res = None
        if "resample" in args.scenarios:
            res = resampling(args.resample_images, scratch, env, (1, 2), args.resample_rounds)
        prof = None
        if "profile" in args.scenarios:
            prof = profiling.profile_build(
                scale_case(args.profile_corpus) if args.profile_corpus else small_case(),
                setup, scratch, env, args.profile_update)
        load = [info.pop("load"), os.getloadavg()]
        raw = {"meta": {"info": info, "setup": asdict(setup), "rss_floor_mb": floor,
                        "load": load,
                        "mode": "quick" if args.quick else "full",
                        "scenarios": sorted(args.scenarios),
                        "argv": ["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None
                                                                  else argv)],
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
