#!/usr/bin/env python
"""nv-datalad's speed claims, measured side by side on one emulated NeuroVault.

One run starts the bundled emulator (``bench`` corpus, loopback only) with a realistic network
profile and times, on the same corpus and the same selected images:

1. nilearn's ``fetch_neurovault(max_images=None)`` (default terms) — the incumbent;
2. a plain parallel download of the same files (requests + 8 threads) — the physical floor;
3. ``datalad addurls`` of an equivalent CSV table — the generic DataLad way;
4. ``nv-datalad build`` fresh with ``-J 1`` and ``-J 8``;
5. a no-op rebuild in ``overwrite`` mode, and an update after 1 % of the files changed;
6. resampling on realistic 2 mm volumes: nilearn's loop against ``nv-datalad resample``;
7. scaling of the build with the corpus size.

Every contender runs in its own subprocess; wall time is taken around that process, and peak
memory is the ``ru_maxrss`` that ``os.wait4`` reports for it: the largest resident set reached by
the process or any descendant it waited for (git-annex, git), i.e. the biggest single process
of the tree, not their sum.

    python benchmarks/run.py --quick            # < 2 minutes on 2 cores
    python benchmarks/run.py --out results.md   # the full run (N up to 5,000)

Internally the script re-runs itself as ``run.py --worker KIND JSON`` for the contenders that
are Python functions (nilearn, plain download, addurls, resampling, profiling).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("nv-bench")

HERE = Path(__file__).resolve()
PY = sys.executable
NV_CLI = [PY, "-m", "nv_datalad.cli", "-q"]
RESAMPLE_COLLECTION = 9001  # collection id of the generated 2 mm volumes (item 6)
WATCHDOG_SECONDS = 3600.0


# ------------------------------------------------------------------------------- measuring


@dataclass
class Measurement:
    """One contender's run: wall time, peak RSS of its process tree, files the server sent."""

    name: str
    n_images: int
    seconds: float
    peak_rss_mb: float
    files: int | None = None
    ok: bool = True
    info: dict[str, Any] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / max(1, self.n_images)


def bench_env(home: Path) -> dict[str, str]:
    """A subprocess environment with an isolated git identity and config, the venv's tools
    (git-annex) on PATH, nilearn's data dir inside the scratch area and no proxy for
    loopback."""
    gitconfig = home / ".gitconfig"
    gitconfig.write_text(
        "[user]\n\tname = nv-datalad bench\n\temail = bench@nv-datalad.invalid\n"
        "[init]\n\tdefaultBranch = main\n"
    )
    env = dict(os.environ)
    bindir = str(Path(PY).parent)
    env.update(
        HOME=str(home),
        GIT_CONFIG_GLOBAL=str(gitconfig),
        GIT_AUTHOR_NAME="nv-datalad bench",
        GIT_AUTHOR_EMAIL="bench@nv-datalad.invalid",
        GIT_COMMITTER_NAME="nv-datalad bench",
        GIT_COMMITTER_EMAIL="bench@nv-datalad.invalid",
        DATALAD_LOG_LEVEL="WARNING",
        NILEARN_DATA=str(home / "nilearn_data"),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PATH=bindir + os.pathsep + env.get("PATH", ""),
    )
    return env


def measure(
    name: str,
    n_images: int,
    argv: Sequence[str],
    env: dict[str, str],
    logs: Path,
    *,
    cwd: Path | None = None,
    emulator: Any = None,
) -> Measurement:
    """Run ``argv`` to completion; time it and read its peak RSS from ``os.wait4``.

    The worker's last stdout line, if JSON, becomes ``info``. With an emulator, its download
    counters are reset first and the number of image files it served is recorded.
    """
    if emulator is not None:
        emulator.reset_counters()
    slug = "".join(c if c.isalnum() else "-" for c in name)
    out, err = logs / f"{slug}.out", logs / f"{slug}.err"
    log.info("running %s (N=%d)", name, n_images)
    with out.open("wb") as fo, err.open("wb") as fe:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=fo, stderr=fe,
                                start_new_session=True)
        timer = threading.Timer(WATCHDOG_SECONDS, _kill_group, (proc.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    files = sum(emulator.downloads.values()) if emulator is not None else None
    requests = dict(emulator.counters) if emulator is not None else {}
    info: dict[str, Any] = {}
    lines = out.read_text(errors="replace").strip().splitlines()
    if lines:
        with contextlib.suppress(ValueError):
            parsed = json.loads(lines[-1])
            info = parsed if isinstance(parsed, dict) else {}
    ok = proc.returncode == 0
    if not ok:
        log.warning("%s exited with %s; see %s\n%s", name, proc.returncode, err,
                    err.read_text(errors="replace")[-2000:])
    m = Measurement(name, n_images, seconds, usage.ru_maxrss / 1024.0, files, ok, info,
                    requests)
    log.info("  %.2f s, peak RSS %.0f MB, files served %s", m.seconds, m.peak_rss_mb, files)
    return m


def _kill_group(pid: int) -> None:
    """Watchdog: a contender that hangs is killed (its own process group only)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def worker_argv(kind: str, **params: Any) -> list[str]:
    return [PY, str(HERE), "--worker", kind, json.dumps(params)]


# ------------------------------------------------------------------------------- workers
# Each runs in its own subprocess and returns a JSON-able dict (printed as the last line).


def work_nilearn(server: str, data_dir: str) -> dict:
    """nilearn's fetcher pointed at the emulator, as tests/helpers.py does it."""
    from nilearn.datasets import neurovault as nv

    api = server + "/api/"
    nv._NEUROVAULT_BASE_URL = api
    nv._NEUROVAULT_COLLECTIONS_URL = api + "collections/"
    nv._NEUROVAULT_IMAGES_URL = api + "images/"
    nv._NEUROSYNTH_FETCH_WORDS_URL = server + "/api/decode/"
    data = nv.fetch_neurovault(max_images=None, data_dir=data_dir, verbose=0)
    return {"ids": sorted(int(m["id"]) for m in data.images_meta)}


def work_plain(pairs_file: str, dest: str, jobs: int) -> dict:
    """The floor: GET every file once with ``jobs`` persistent connections, write it, done."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    pairs = json.loads(Path(pairs_file).read_text())
    local = threading.local()

    def fetch(pair: list[str]) -> int:
        url, rel = pair
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        target = Path(dest) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with session.get(url, stream=True, timeout=120) as reply:
            reply.raise_for_status()
            with target.open("wb") as fh:
                for chunk in reply.iter_content(1 << 16):
                    fh.write(chunk)
        return target.stat().st_size

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        sizes = list(pool.map(fetch, pairs))
    return {"files": len(sizes), "bytes": sum(sizes)}


def work_addurls(table: str, dataset: str, jobs: int) -> dict:
    """The generic DataLad way: create a dataset, addurls a CSV (url, filename, metadata)."""
    import datalad.api as dl

    dl.create(path=dataset, result_renderer="disabled")
    subprocess.run(["git", "-C", dataset, "config", "annex.security.allowed-ip-addresses",
                    "127.0.0.1"], check=True)
    results = dl.addurls(urlfile=table, urlformat="{url}", filenameformat="{filename}",
                         dataset=dataset, jobs=jobs, result_renderer="disabled",
                         on_failure="ignore", return_type="list")
    added = sum(1 for r in results if r.get("action") == "addurl" and r.get("status") == "ok")
    bad = [r.get("message") for r in results if r.get("status") not in ("ok", "notneeded")]
    return {"added": added, "errors": len(bad), "first_error": str(bad[0]) if bad else None}


def work_nilearn_resample(root: str, sources: list[str], out_dir: str) -> dict:
    """nilearn's own loop: ``resample_img`` to its 3 mm STD_AFFINE, then ``to_filename``."""
    from nilearn.datasets.neurovault import STD_AFFINE
    from nilearn.image import resample_img

    for rel in sources:
        img = resample_img(img=str(Path(root) / rel), target_affine=STD_AFFINE,
                           interpolation="continuous")
        img.to_filename(str(Path(out_dir) / (Path(rel).name.split(".")[0] + "_resampled.nii.gz")))
    return {"resampled": len(sources)}


def work_provenance_resample(dataset: str, jobs: int) -> dict:
    """What the build does for derivatives: one ``datalad run`` over every image."""
    from nv_datalad.dataset import layout
    from nv_datalad.derivatives.resample import resample_with_provenance

    root = Path(dataset)
    items = []
    for path in sorted((root / layout.NEUROVAULT_DIR).glob("collection_*/image_*.nii.gz")):
        parsed = layout.parse_image_file(path.name)
        cid = layout.parse_collection_dir(path.parent.name)
        if parsed is None or cid is None:
            continue
        items.append((cid, parsed[0], str(path.relative_to(root)), ""))
    results = resample_with_provenance(root, items, None, jobs=jobs)
    return {"resampled": sum(1 for r in results if not r.failed),
            "failed": sum(1 for r in results if r.failed)}


def work_profile(spec: str, dataset: str, jobs: int, mode: str | None, out: str) -> dict:
    """``builder.build`` under cProfile (wall clock), to see which stage the time goes to."""
    import cProfile

    from nv_datalad.dataset.runner import ensure_tools_on_path
    from nv_datalad.pipeline import build

    ensure_tools_on_path()
    profiler = cProfile.Profile(time.perf_counter)
    profiler.enable()
    report = build(spec, dataset, mode=mode, jobs=jobs)
    profiler.disable()
    profiler.dump_stats(out)
    return {"summary": report.summary()}


WORKERS: dict[str, Callable[..., dict]] = {
    "nilearn": work_nilearn,
    "plain": work_plain,
    "addurls": work_addurls,
    "nilearn-resample": work_nilearn_resample,
    "provenance-resample": work_provenance_resample,
    "profile": work_profile,
}


def run_worker(kind: str, params: str) -> int:
    result = WORKERS[kind](**json.loads(params))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


# ------------------------------------------------------------------------------- scenarios


@dataclass
class Profile:
    latency: float
    bandwidth: float
    jobs: int


@dataclass
class SizeRun:
    """Everything measured against one emulator of ``corpus_size`` images."""

    corpus_size: int
    selected: int = 0
    same_selection: bool | None = None
    measurements: dict[str, Measurement] = field(default_factory=dict)
    update_k: int = 0
    update_downloads: dict[int, int] = field(default_factory=dict)
    update_expected: list[int] = field(default_factory=list)
    noop_new_commit: bool | None = None
    notes: list[str] = field(default_factory=list)


def write_spec(directory: Path, server: str) -> Path:
    """nilearn's defaults spelled as a spec: no limit, default collection and image terms."""
    import yaml

    path = directory / "bench.yaml"
    spec = {"name": "nv-bench", "description": "benchmark", "server": server, "max_images": None}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def dataset_image_ids(root: Path) -> list[int]:
    ids = []
    for sidecar in (root / "neurovault").glob("collection_*/image_*_metadata.json"):
        ids.append(int(json.loads(sidecar.read_text())["id"]))
    return sorted(ids)


def git_head(root: Path) -> str:
    return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def file_pairs(records: dict[int, dict], ids: Sequence[int]) -> list[tuple[str, str]]:
    """(url, dataset-relative path) per image, paths from integer ids (never server strings)."""
    from nv_datalad.dataset import layout

    pairs = []
    for iid in ids:
        rec = records[iid]
        url = str(rec["file"])
        pairs.append((url, str(layout.image_file(int(rec["collection_id"]), iid,
                                                 layout.image_extension(url)))))
    return pairs


def write_addurls_table(path: Path, records: dict[int, dict], ids: Sequence[int]) -> None:
    import csv

    fields = ("map_type", "modality", "analysis_level", "collection_id")
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["url", "filename", "image_id", *fields])
        for (url, rel), iid in zip(file_pairs(records, ids), ids, strict=True):
            rec = records[iid]
            out.writerow([url, rel, iid, *("" if rec.get(f) is None else rec.get(f)
                                           for f in fields)])


@contextlib.contextmanager
def emulator(corpus_size: int, profile: Profile) -> Iterator[Any]:
    from nv_datalad.emulator import Emulator

    with Emulator(corpus="bench", n_images=corpus_size, port=0) as emu:
        emu.set_network(latency=profile.latency, bandwidth=profile.bandwidth)
        yield emu


def compare(corpus_size: int, profile: Profile, work: Path, env: dict[str, str],
            full_set: bool) -> SizeRun:
    """Items 1-5 on one corpus (``full_set``), or only the scaling subset (plain download,
    fresh ``-J jobs`` build, no-op rebuild)."""
    run = SizeRun(corpus_size)
    base = work / f"n{corpus_size}"
    logs = base / "logs"
    logs.mkdir(parents=True)
    jobs = profile.jobs
    with emulator(corpus_size, profile) as emu:
        spec = write_spec(base, emu.url)
        records = emu.images
        ms = run.measurements

        def build(name: str, ds: Path, j: int, mode: str | None = None) -> Measurement:
            argv = [*NV_CLI, "build", str(spec), "-d", str(ds), "-J", str(j)]
            if mode:
                argv += ["--mode", mode]
            return measure(name, run.selected or corpus_size, argv, env, logs, emulator=emu)

        nl_ids: list[int] | None = None
        if full_set:
            m = measure("nilearn fetch_neurovault", corpus_size,
                        worker_argv("nilearn", server=emu.url, data_dir=str(base / "nilearn")),
                        env, logs, emulator=emu)
            ms["nilearn"] = m
            nl_ids = m.info.get("ids")
        ds_fast = base / f"nv-J{jobs}"
        ms["fresh_fast"] = build(f"nv-datalad build -J {jobs} (fresh)", ds_fast, jobs)
        nv_ids = dataset_image_ids(ds_fast)
        run.selected = len(nv_ids)
        ms["fresh_fast"].n_images = run.selected
        if full_set:
            ds_slow = base / "nv-J1"
            ms["fresh_1"] = build("nv-datalad build -J 1 (fresh)", ds_slow, 1)
            run.same_selection = nl_ids == nv_ids == dataset_image_ids(ds_slow)
            if not run.same_selection:
                run.notes.append(f"selection differs: nilearn {len(nl_ids or [])} images, "
                                 f"nv-datalad {len(nv_ids)}")
            ms["nilearn"].n_images = run.selected
        pairs_file = base / "pairs.json"
        pairs_file.write_text(json.dumps(file_pairs(records, nv_ids)))
        ms["plain"] = measure(f"plain parallel download ({jobs} connections)", run.selected,
                              worker_argv("plain", pairs_file=str(pairs_file),
                                          dest=str(base / "plain"), jobs=jobs),
                              env, logs, emulator=emu)
        if full_set:
            table = base / "table.csv"
            write_addurls_table(table, records, nv_ids)
            ms["addurls"] = measure(f"datalad addurls -J {jobs}", run.selected,
                                    worker_argv("addurls", table=str(table),
                                                dataset=str(base / "addurls"), jobs=jobs),
                                    env, logs, emulator=emu)
        head = git_head(ds_fast)
        ms["noop"] = build("nv-datalad build, no-op (overwrite)", ds_fast, jobs, "overwrite")
        run.noop_new_commit = git_head(ds_fast) != head
        if full_set:
            k = max(1, round(run.selected / 100))
            step = max(1, len(nv_ids) // k)
            run.update_k = k
            run.update_expected = sorted(nv_ids[::step][:k])
            for iid in run.update_expected:
                emu.mutate_content(iid)
            ms["update"] = build(f"nv-datalad build, update of k={k} (overwrite)", ds_fast,
                                 jobs, "overwrite")
            run.update_downloads = dict(emu.downloads)
        for m in ms.values():
            m.n_images = run.selected
    return run


# ------------------------------------------------------------------------------- resampling


@dataclass
class ResampleRun:
    n_images: int
    measurements: dict[str, Measurement] = field(default_factory=dict)
    max_abs_diff: float | None = None


def generate_volumes(root: Path, n: int) -> list[str]:
    """``n`` realistic 2 mm MNI volumes (91×109×91 float32, smooth blobs in a brain mask), made
    by the emulator's own generator, at the dataset layout's paths."""
    from nv_datalad.dataset import layout
    from nv_datalad.emulator.nifti import GRIDS, VolumeKind, VolumeSpec, nifti_bytes, volume_data

    spec = VolumeSpec(VolumeKind.STAT, "mni2mm")
    rels = []
    for iid in range(1, n + 1):
        rel = str(layout.image_file(RESAMPLE_COLLECTION, iid))
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(nifti_bytes(volume_data(spec, 0, iid, 0), GRIDS["mni2mm"], True))
        rels.append(rel)
    return rels


def make_dataset(path: Path, source: Path, env: dict[str, str]) -> None:
    """A throwaway DataLad dataset holding the generated volumes (annexed, committed)."""
    subprocess.run(["datalad", "create", "-c", "text2git", str(path)], env=env, check=True,
                   capture_output=True)
    shutil.copytree(source / "neurovault", path / "neurovault")
    subprocess.run(["datalad", "save", "-d", str(path), "-m", "volumes"], env=env, check=True,
                   capture_output=True)


def write_manifest(root: Path, rels: Sequence[str]) -> Path:
    """A manifest for the bare ``nv-datalad resample`` entry point (no git needed)."""
    from nv_datalad.dataset import layout
    from nv_datalad.derivatives.manifest import format_manifest, manifest_row

    rows = []
    for rel in rels:
        name = Path(rel).name
        parsed = layout.parse_image_file(name)
        assert parsed is not None
        rows.append(manifest_row(RESAMPLE_COLLECTION, parsed[0], rel,
                                 f"BENCH-s0--{parsed[0]}.nii.gz"))
    path = root / "manifest.tsv"
    path.write_text(format_manifest(rows))
    return path


def resampling(n: int, work: Path, env: dict[str, str], jobs_list: Sequence[int]) -> ResampleRun:
    """Item 6: nilearn's loop, the bare entry point and the ``datalad run`` path."""
    run = ResampleRun(n)
    base = work / "resample"
    logs = base / "logs"
    logs.mkdir(parents=True)
    source = base / "source"
    log.info("generating %d 2 mm volumes", n)
    rels = generate_volumes(source, n)
    nl_out = base / "nilearn-out"
    nl_out.mkdir()
    run.measurements["nilearn"] = measure(
        "nilearn resample_img loop", n,
        worker_argv("nilearn-resample", root=str(source), sources=rels, out_dir=str(nl_out)),
        env, logs)
    bare = base / "bare"
    shutil.copytree(source, bare)
    manifest = write_manifest(bare, rels)
    for j in jobs_list:
        run.measurements[f"bare_{j}"] = measure(
            f"nv-datalad resample -J {j} (entry point)", n,
            [*NV_CLI, "resample", "--manifest", str(manifest), "-J", str(j)], env, logs,
            cwd=bare)
    for j in jobs_list:
        ds = base / f"ds-J{j}"
        make_dataset(ds, source, env)
        run.measurements[f"prov_{j}"] = measure(
            f"nv-datalad resample -J {j} (datalad run, as in a build)", n,
            worker_argv("provenance-resample", dataset=str(ds), jobs=j), env, logs)
    run.max_abs_diff = _max_diff(nl_out, bare, rels)
    return run


def _max_diff(nl_out: Path, source: Path, rels: Sequence[str]) -> float | None:
    """Same work? The largest voxel difference between nilearn's and nv-datalad's output."""
    import nibabel as nib
    import numpy as np

    from nv_datalad.dataset import layout

    worst = 0.0
    for rel in rels[:3]:
        parsed = layout.parse_image_file(Path(rel).name)
        if parsed is None:
            continue
        ours = source / layout.resampled_file(RESAMPLE_COLLECTION, parsed[0])
        theirs = nl_out / f"image_{parsed[0]}_resampled.nii.gz"
        if not (ours.exists() and theirs.exists()):
            return None
        a = np.asarray(nib.load(ours).dataobj)
        b = np.asarray(nib.load(theirs).dataobj)
        if a.shape != b.shape:
            return float("inf")
        worst = max(worst, float(np.nanmax(np.abs(a - b))))
    return worst


# ------------------------------------------------------------------------------- profiling

#: (file suffix, function) → the label of a build stage, for the cProfile breakdown.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("nv_datalad/dataset.py", "create", "dataset create (datalad create)"),
    ("nv_datalad/dataset.py", "recover", "recover interrupted build"),
    ("nv_datalad/dataset.py", "local_images", "read local sidecars"),
    ("nv_datalad/selection.py", "select", "metadata crawl (selection)"),
    ("nv_datalad/builder.py", "_still_on_server", "probe unselected local images"),
    ("nv_datalad/update.py", "make_plan", "plan"),
    ("nv_datalad/builder.py", "_settle_checks", "conditional HEAD checks"),
    ("nv_datalad/builder.py", "_write_collections", "collection sidecars"),
    ("nv_datalad/annex.py", "addurls", "git annex addurl (download + hash)"),
    ("nv_datalad/builder.py", "_fix_extension", "extension check"),
    ("nv_datalad/annex.py", "set_metadata", "git annex metadata"),
    ("nv_datalad/builder.py", "_update_content", "content updates"),
    ("nv_datalad/dataset.py", "write_json", "write JSON sidecars"),
    ("nv_datalad/dataset.py", "commit", "git commits (all)"),
    ("nv_datalad/builder.py", "_write_state", "tables (images.tsv, collections.tsv)"),
    ("nv_datalad/builder.py", "_finalise", "README, CITATION, CHANGES, record, tag"),
    ("nv_datalad/builder.py", "_derivatives", "derivatives (resample, words)"),
    ("nv_datalad/builder.py", "build", "total build()"),
)


def stage_times(stats_file: Path) -> list[tuple[str, float, int]]:
    """(stage, cumulative wall seconds, calls) for the stages above, from a cProfile dump."""
    import pstats

    stats = pstats.Stats(str(stats_file)).stats  # type: ignore[attr-defined]
    out = []
    for suffix, func, label in STAGES:
        total, calls = 0.0, 0
        for (filename, _line, name), (_cc, nc, _tt, ct, _callers) in stats.items():
            if name == func and filename.endswith(suffix):
                total += ct
                calls += nc
        if calls:
            out.append((label, total, calls))
    return out


def top_functions(stats_file: Path, limit: int = 12) -> list[tuple[str, float, int]]:
    """Functions with the most own wall time (where the waiting actually happens)."""
    import pstats

    stats = pstats.Stats(str(stats_file)).stats  # type: ignore[attr-defined]
    rows = [(f"{Path(fn).name}:{line}({name})", tt, nc)
            for (fn, line, name), (_cc, nc, tt, _ct, _callers) in stats.items()]
    return sorted(rows, key=lambda r: -r[1])[:limit]


def profile_build(corpus_size: int, profile: Profile, work: Path,
                  env: dict[str, str]) -> dict[str, list]:
    """cProfile of a fresh build and of a no-op rebuild on the same corpus."""
    base = work / f"profile-n{corpus_size}"
    logs = base / "logs"
    logs.mkdir(parents=True)
    out: dict[str, list] = {}
    with emulator(corpus_size, profile) as emu:
        spec = write_spec(base, emu.url)
        ds = base / "ds"
        for label, mode in (("fresh", None), ("no-op", "overwrite")):
            stats = base / f"{label}.prof"
            measure(f"profile {label}", corpus_size,
                    worker_argv("profile", spec=str(spec), dataset=str(ds), jobs=profile.jobs,
                                mode=mode, out=str(stats)), env, logs, emulator=emu)
            if stats.exists():
                out[label] = stage_times(stats)
                out[f"{label} (top own time)"] = top_functions(stats)
    return out


# ------------------------------------------------------------------------------- reporting


def machine() -> dict[str, str]:
    import datalad
    import nilearn

    annex = subprocess.run(["git", "annex", "version", "--raw"], capture_output=True,
                           text=True, check=False).stdout.strip()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (nproc), {platform.system()}",
        "python": platform.python_version(),
        "git-annex": annex or "?",
        "datalad": datalad.__version__,
        "nilearn": nilearn.__version__,
    }


def _fmt_ratio(a: Measurement | None, b: Measurement | None) -> float | None:
    if a is None or b is None or not a.ok or not b.ok or b.seconds <= 0:
        return None
    return a.seconds / b.seconds


def _check(value: float | None, target: str, ok: Callable[[float], bool]) -> tuple[str, str, str]:
    if value is None:
        return "n/a", target, "n/a"
    return f"{value:.3f}", target, "yes" if ok(value) else "**no**"


def _comparison(main: SizeRun, main_n: int) -> list[str]:
    lines = [
        f"## Same corpus, same images (N = {main.selected} selected of {main_n})", "",
        f"Selection identical for nilearn and both nv-datalad builds: "
        f"**{'yes' if main.same_selection else 'NO'}** ({main.selected} images).", "",
        "| contender | wall (s) | ms / image | peak RSS (MB) | files served "
        "| file GET / HEAD | API requests | ok |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in main.measurements.values():
        req = m.requests
        api = sum(v for k, v in req.items() if not k.startswith("file_") and k != "control")
        lines.append(f"| {m.name} | {m.seconds:.2f} | {m.ms_per_image:.1f} | "
                     f"{m.peak_rss_mb:.0f} | {'' if m.files is None else m.files} | "
                     f"{req.get('file_get', 0)} / {req.get('file_head', 0)} | {api} | "
                     f"{'yes' if m.ok else '**no**'} |")
    return [*lines, ""]


def _targets(main: SizeRun | None, res: ResampleRun | None,
             runs: dict[int, SizeRun]) -> list[str]:
    """The ratios issue 8 sets targets for, each with its verdict."""
    rows: list[tuple[str, str, str, str]] = []
    if main is not None:
        ms = main.measurements
        fresh = ms.get("fresh_fast")
        downloads = main.update_downloads
        exact = (sorted(downloads) == main.update_expected
                 and sum(downloads.values()) == main.update_k)
        rows += [
            ("fresh build -J 8 / nilearn",
             *_check(_fmt_ratio(fresh, ms.get("nilearn")), "≤ 0.25", lambda v: v <= 0.25)),
            ("fresh build -J 8 / plain download",
             *_check(_fmt_ratio(fresh, ms.get("plain")), "≤ 1.5", lambda v: v <= 1.5)),
            ("fresh build -J 1 / nilearn",
             *_check(_fmt_ratio(ms.get("fresh_1"), ms.get("nilearn")), "(info)",
                     lambda v: True)),
            ("fresh build -J 8 / datalad addurls",
             *_check(_fmt_ratio(fresh, ms.get("addurls")), "(info)", lambda v: True)),
            ("no-op rebuild / fresh build -J 8",
             *_check(_fmt_ratio(ms.get("noop"), fresh), "≤ 0.25", lambda v: v <= 0.25)),
            ("update / fresh build -J 8",
             *_check(_fmt_ratio(ms.get("update"), fresh), "(info)", lambda v: True)),
            (f"update of k={main.update_k}: image files downloaded",
             f"{sum(downloads.values())}", f"exactly {main.update_k}",
             "yes" if exact else "**no**"),
            ("no-op rebuild made a commit", "yes" if main.noop_new_commit else "no", "no",
             "**no**" if main.noop_new_commit else "yes"),
        ]
    for n in sorted(runs):
        noop = runs[n].measurements.get("noop")
        if noop is not None and noop.ok:
            rows.append((f"no-op rebuild, s per 1,000 images (N={runs[n].selected})",
                         *_check(noop.seconds * 1000 / max(1, runs[n].selected), "≤ 2",
                                 lambda v: v <= 2.0)))
    if res is not None:
        rm = res.measurements
        for kind, label in (("prov", "datalad run"), ("bare", "entry point")):
            rows.append((f"resample -J 2 speedup over -J 1 ({label})",
                         *_check(_fmt_ratio(rm.get(f"{kind}_1"), rm.get(f"{kind}_2")), "≥ 1.7",
                                 lambda v: v >= 1.7)))
        rows.append(("resample -J 2 (datalad run) / nilearn loop",
                     *_check(_fmt_ratio(rm.get("prov_2"), rm.get("nilearn")), "(info)",
                             lambda v: True)))
    if not rows:
        return []
    lines = ["## Ratios and targets (issue 8)", "",
             "| ratio | value | target | met |", "|---|---:|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return [*lines, ""]


def _resampling(res: ResampleRun) -> list[str]:
    lines = [f"## Resampling (N = {res.n_images} generated 91×109×91 float32 2 mm volumes "
             "→ nilearn's 3 mm grid, continuous)", "",
             "| contender | wall (s) | ms / image | peak RSS (MB) | ok |",
             "|---|---:|---:|---:|---|"]
    for m in res.measurements.values():
        lines.append(f"| {m.name} | {m.seconds:.2f} | {m.ms_per_image:.0f} | "
                     f"{m.peak_rss_mb:.0f} | {'yes' if m.ok else '**no**'} |")
    diff = "n/a" if res.max_abs_diff is None else f"{res.max_abs_diff:.3g}"
    return [*lines, "", f"Largest voxel difference nilearn vs nv-datalad output: {diff}", ""]


def _scaling(runs: dict[int, SizeRun], jobs: int) -> list[str]:
    lines = [f"## Scaling (bench corpus; fresh build and no-op rebuild at -J {jobs})", "",
             "| corpus | selected | plain (s) | build (s) | build ms / image | build / plain "
             "| build peak RSS (MB) | no-op (s) | no-op s / 1,000 img | no-op peak RSS (MB) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sorted(runs):
        r = runs[n].measurements
        f, p, z = r["fresh_fast"], r["plain"], r["noop"]
        lines.append(f"| {n} | {runs[n].selected} | {p.seconds:.2f} | {f.seconds:.2f} | "
                     f"{f.ms_per_image:.1f} | {f.seconds / p.seconds:.2f} | "
                     f"{f.peak_rss_mb:.0f} | {z.seconds:.2f} | "
                     f"{z.seconds * 1000 / max(1, runs[n].selected):.2f} | "
                     f"{z.peak_rss_mb:.0f} |")
    sizes = sorted(runs)
    if len(sizes) >= 2:
        lo, hi = runs[sizes[0]], runs[sizes[-1]]
        grow = hi.measurements["fresh_fast"].peak_rss_mb - lo.measurements["fresh_fast"].peak_rss_mb
        per = grow * 1024 / max(1, hi.selected - lo.selected)
        lines += ["", f"Peak RSS growth of the build from N={lo.selected} to N={hi.selected}: "
                  f"{grow:+.0f} MB ({per:+.1f} KB per extra image)."]
    for run in runs.values():
        lines += [f"- note (N={run.corpus_size}): {note}" for note in run.notes]
    return [*lines, ""]


def _profile(prof: dict[str, list]) -> list[str]:
    lines = ["## Where a build's time goes (cProfile, wall clock, cumulative)", ""]
    for label, rows in prof.items():
        lines += [f"### {label}", "", "| stage / function | seconds | calls |", "|---|---:|---:|"]
        lines += [f"| {a} | {b:.2f} | {c} |" for a, b, c in rows]
        lines += [""]
    return lines


def render(args: argparse.Namespace, profile: Profile, info: dict[str, str],
           runs: dict[int, SizeRun], main_n: int, res: ResampleRun | None,
           prof: dict[str, list] | None, elapsed: float) -> str:
    """The Markdown report: machine, profile, then one section per benchmark that ran."""
    lines = ["# nv-datalad benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [
        f"- network profile: {profile.latency * 1000:.0f} ms per request, "
        f"{profile.bandwidth / 1e6:g} MB/s per connection (emulator on 127.0.0.1)",
        f"- corpus: emulator `bench`, {main_n} images generated for the side-by-side run, "
        f"{', '.join(str(n) for n in sorted(runs)) or 'none'} for scaling; "
        f"mode: {'quick' if args.quick else 'full'}; whole run {elapsed:.0f} s",
        "",
    ]
    main = runs.get(main_n)
    if main is not None:
        lines += _comparison(main, main_n)
    lines += _targets(main, res, runs)
    if res is not None:
        lines += _resampling(res)
    if runs:
        lines += _scaling(runs, profile.jobs)
    if prof:
        lines += _profile(prof)
    lines += ["Peak RSS: the largest single process of the contender's tree "
              "(`os.wait4` ru_maxrss). Files served: image files the emulator sent in full "
              "during that run.", ""]
    return "\n".join(lines)


def render_raw(raw: dict) -> str:
    """The report from the raw measurements (as saved by ``--raw``)."""

    def size_run(d: dict) -> SizeRun:
        run = SizeRun(**{k: v for k, v in d.items() if k != "measurements"})
        run.measurements = {k: Measurement(**m) for k, m in d["measurements"].items()}
        run.update_downloads = {int(k): v for k, v in run.update_downloads.items()}
        return run

    runs = {int(n): size_run(d) for n, d in raw["runs"].items()}
    res = None
    if raw.get("resample"):
        d = raw["resample"]
        res = ResampleRun(d["n_images"], {k: Measurement(**m) for k, m in
                                          d["measurements"].items()}, d["max_abs_diff"])
    args = argparse.Namespace(**raw["args"])
    return render(args, Profile(**raw["profile"]), raw["info"], runs, args.images, res,
                  raw.get("prof"), raw["elapsed"])


# ------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small N (same network profile): under 2 minutes on 2 cores")
    p.add_argument("--images", type=int, default=None,
                   help="corpus size of the side-by-side comparison (default 1000; quick 100)")
    p.add_argument("--scale", default=None,
                   help="comma-separated corpus sizes for scaling (default 100,1000,5000; "
                        "quick 30,100)")
    p.add_argument("--resample-images", type=int, default=None,
                   help="2 mm volumes for the resampling benchmark (default 120; quick 16)")
    p.add_argument("--latency", type=float, default=0.1, help="seconds per request (0.1)")
    p.add_argument("--bandwidth", type=float, default=10e6,
                   help="bytes per second per connection (10e6)")
    p.add_argument("-J", "--jobs", type=int, default=8,
                   help="connections / build jobs of the parallel contenders (8)")
    p.add_argument("--profile", action="store_true",
                   help="also cProfile a fresh build and a no-op rebuild (stage breakdown)")
    p.add_argument("--no-resample", action="store_true", help="skip item 6")
    p.add_argument("--profile-only", action="store_true",
                   help="only the cProfile stage breakdown, at --images")
    p.add_argument("--out", type=Path, help="also write the Markdown report here")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--raw", type=Path, help="also save the raw measurements as JSON here")
    p.add_argument("--render-raw", type=Path, metavar="JSON",
                   help="measure nothing: re-render the report from a --raw file")
    args = p.parse_args(argv)
    if args.images is None:
        args.images = 100 if args.quick else 1000
    if args.scale is None:
        args.scale = "30,100" if args.quick else "100,1000,5000"
    args.sizes = sorted({int(s) for s in args.scale.split(",") if s.strip()} | {args.images})
    if args.resample_images is None:
        args.resample_images = 16 if args.quick else 120
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        return run_worker(argv[1], argv[2])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    args = parse_args(argv)
    profile = Profile(args.latency, args.bandwidth, args.jobs)
    if args.render_raw:
        report = render_raw(json.loads(args.render_raw.read_text()))
        sys.stdout.write(report)
        if args.out:
            args.out.write_text(report)
        return 0
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="nv-bench-"))
    try:
        home = scratch / "home"
        home.mkdir()
        env = bench_env(home)
        os.environ.update({k: env[k] for k in ("PATH", "GIT_CONFIG_GLOBAL", "HOME")})
        info = machine()
        runs: dict[int, SizeRun] = {}
        res = None
        if not args.profile_only:
            runs = {n: compare(n, profile, scratch, env, full_set=n == args.images)
                    for n in args.sizes}
            if not args.no_resample:
                res = resampling(args.resample_images, scratch, env, (1, 2))
        want_profile = args.profile or args.profile_only
        prof = profile_build(args.images, profile, scratch, env) if want_profile else None
        raw = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "profile": asdict(profile), "info": info,
               "runs": {str(n): asdict(r) for n, r in runs.items()},
               "resample": asdict(res) if res else None, "prof": prof,
               "elapsed": time.perf_counter() - started}
        if args.raw:
            args.raw.write_text(json.dumps(raw, indent=1))
        report = render_raw(raw)
    finally:
        if args.keep:
            log.info("scratch kept in %s", scratch)
        else:
            _rmtree(scratch)
    sys.stdout.write(report)
    if args.out:
        args.out.write_text(report)
    return 0


def _rmtree(path: Path) -> None:
    """git-annex makes its object directories read-only: restore write bits, then delete."""
    for root, dirs, _files in os.walk(path):
        for d in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, d), 0o755)
    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
