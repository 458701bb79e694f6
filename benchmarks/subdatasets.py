"""Scale of ``subdatasets: per-collection``: fresh and no-op builds of the bench corpus.

Issue 14's question: does the cost of a per-collection dataset grow linearly with the number
of images (time per 1,000 images at the largest size within 1.3 x that at the smallest), and
does a no-op rebuild stay cheap (<= 60 s at 100,000 images)? The emulator serves tiny
(4x4x4) volumes on loopback without an emulated network, so what is measured is the
repository work (subdataset creation, registration or download and ``git annex add``,
commits), not bytes.

    .venv/bin/python benchmarks/subdatasets.py --images 10000 30000 --content register

prints one row per size and content mode (collections, fresh and no-op seconds, seconds per
1,000 images, peak RSS of the largest process) and writes the rows as JSON next to it
(``--out``). Each build runs in its own process, started by ``launch.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLI = [sys.executable, "-m", "nv_datalad.cli", "-q"]
LAUNCHER = [sys.executable, "-I", "-S", str(ROOT / "benchmarks" / "launch.py")]


def _timed(argv: list[str], env: dict[str, str], result: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB of the largest process of the build, exit status), through
    ``launch.py`` so the figure is the build's own, not this process's (which holds the
    emulator; see launch.py)."""
    proc = subprocess.run([*LAUNCHER, str(result), *argv], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    if proc.returncode:
        sys.stderr.write(proc.stderr.decode(errors="replace")[-2000:])
    got = json.loads(result.read_text())
    return got["seconds"], got["maxrss_kb"] / 1024, got["exit"]


def run(n_images: int, content: str, work: Path, jobs: int) -> dict:
    from nv_datalad.emulator import Emulator

    with Emulator(corpus="bench", n_images=n_images, tiny=True, port=0) as emu:
        spec = work / f"scale-{n_images}-{content}.yaml"
        spec.write_text(yaml.safe_dump({
            "name": "nv-scale", "server": emu.url, "max_images": None, "content": content,
            "subdatasets": "per-collection",
            # every public image, as specs/everything.yaml: the size is the corpus's
            "collections": {"terms": {}}, "images": {"use_default_terms": False, "terms": {}},
        }, sort_keys=False))
        ds = work / f"ds-{n_images}-{content}"
        env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
        argv = [*CLI, "build", str(spec), "-d", str(ds), "-J", str(jobs)]
        fresh, fresh_mb, code = _timed(argv, env, work / "fresh.json")
        noop, noop_mb, code2 = _timed(argv, env, work / "noop.json")
    images = sum(1 for _ in (ds / "neurovault").glob("collection_*/image_*_metadata.json"))
    subs = sum(1 for _ in (ds / "neurovault").glob("collection_*/.git"))
    return {"corpus": n_images, "content": content, "images": images, "subdatasets": subs,
            "fresh_s": round(fresh, 1), "noop_s": round(noop, 1),
            "fresh_s_per_1k": round(1000 * fresh / max(1, images), 2),
            "noop_s_per_1k": round(1000 * noop / max(1, images), 2),
            "peak_mb": round(max(fresh_mb, noop_mb), 1), "ok": code == code2 == 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--content", nargs="+", default=["register"],
                        choices=["register", "download"])
    parser.add_argument("-J", "--jobs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "subdatasets.json")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nv-scale-") as tmp:
        for content in args.content:
            for n in args.images:
                rows.append(run(n, content, Path(tmp), args.jobs))
                print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    head = ("content", "images", "subdatasets", "fresh_s", "fresh_s_per_1k", "noop_s",
            "noop_s_per_1k", "peak_mb", "ok")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in head) + " |")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
