"""Where a build's time goes: a fresh build and a no-op rebuild under cProfile, per stage.

The stages are named by the functions that implement them (``module:qualname``). Each is
resolved to its code object before anything is measured, and a name that no longer exists
stops the benchmark with exit status 2 naming it: the profile of an earlier version listed
functions that had been renamed away and reported nothing for them, silently.

The build runs in-process in a worker subprocess (``workers.py profile``), profiled with the
wall clock. The stage table is the main thread's: time spent in download or crawl threads
shows up as the cumulative time of the main-thread function that waits for them. Every other
thread gets a profiler of its own (``Thread.run`` is wrapped in the worker), so the report also
names the functions those threads spend their time in. Interpreter start-up and imports, which
an in-process profile cannot see, are timed separately as subprocesses.

(The module is not called ``profile``: cProfile imports the standard library's ``profile``,
which a ``benchmarks/profile.py`` would shadow when the scripts run from ``benchmarks/``.)
"""

from __future__ import annotations

import importlib
import inspect
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from measure import NV_CLI, PY, log, measure, worker_argv
from scenarios import Case, Setup, dataset_records, serve, write_spec

#: (stage label, function) in pipeline order; indented labels are parts of the one above.
STAGES: tuple[tuple[str, str], ...] = (
    ("dataset creation (datalad create)", "nv_datalad.dataset.repo:create"),
    ("recovery of an interrupted build", "nv_datalad.dataset.recover:recover"),
    ("crawl (selection)", "nv_datalad.pipeline.select:select"),
    ("probe: unselected local images", "nv_datalad.pipeline.probe:still_on_server"),
    ("probe: conditional file checks", "nv_datalad.pipeline.probe:file_changes"),
    ("plan", "nv_datalad.pipeline.plan:make_plan"),
    ("download + annex add/register/metadata", "nv_datalad.pipeline.importer:place"),
    ("· download streamed into annex batches", "nv_datalad.pipeline.importer:_download"),
    ("· · HTTP downloads", "nv_datalad.neurovault.download:fetch_all"),
    ("· registration (content: register)", "nv_datalad.pipeline.importer:_register"),
    ("commits (all)", "nv_datalad.dataset.repo:commit"),
    ("derivatives", "nv_datalad.pipeline.derive:derive"),
    ("derivatives: Neurosynth vectors", "nv_datalad.pipeline.derive:vectorize"),
    ("release: tables", "nv_datalad.pipeline.release:write_tables"),
    ("release: README, CITATION, CHANGES, commit, tag", "nv_datalad.pipeline.release:release"),
    ("total build()", "nv_datalad.pipeline:build"),
)

CodeKey = tuple[str, int, str]  # what pstats keys a function by


def _resolve(target: str) -> Callable[..., Any] | None:
    module_name, _, qualname = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError:
        return None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return inspect.unwrap(obj) if inspect.isfunction(obj) else None


def check_stages() -> None:
    """Exit with status 2, naming them, if any profiled function does not exist."""
    missing = [target for _, target in STAGES if _resolve(target) is None]
    if missing:
        log.error("benchmarks/profiling.py STAGES names functions that do not exist: %s "
                  "(update the list to the pipeline's names)", ", ".join(missing))
        raise SystemExit(2)


def stage_keys() -> list[tuple[str, str, CodeKey]]:
    """(label, target, pstats key) per stage."""
    check_stages()
    out = []
    for label, target in STAGES:
        code = _resolve(target).__code__  # type: ignore[union-attr]
        out.append((label, target, (code.co_filename, code.co_firstlineno, code.co_name)))
    return out


def _thread_profilers() -> list[Any]:
    """A wall-clock profiler per thread started from now on, kept once its thread ends."""
    import cProfile

    done: list[Any] = []
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profiler = cProfile.Profile(time.perf_counter)
        profiler.enable()
        try:
            original(self)
        finally:
            profiler.disable()
            done.append(profiler)

    threading.Thread.run = run  # type: ignore[method-assign]
    return done


def _top(stats: dict, key: int, only: str = "", n: int = 12) -> list[list[Any]]:
    """The ``n`` functions with the most time: own (``key`` 2) or cumulative (3)."""
    rows = [(f"{Path(fn).name}:{line}({name})", values[key], values[1])
            for (fn, line, name), values in stats.items() if only in fn]
    return [list(r) for r in sorted(rows, key=lambda row: -row[1])[:n]]


def work_profile(spec: str, dataset: str, jobs: int, mode: str | None = None) -> dict:
    """The worker: ``pipeline.build`` under cProfile; stage rows and top functions."""
    import cProfile
    import pstats

    keys = stage_keys()
    from nv_datalad.dataset.runner import ensure_tools_on_path
    from nv_datalad.pipeline import build

    ensure_tools_on_path()
    threads = _thread_profilers()
    profiler = cProfile.Profile(time.perf_counter)
    profiler.enable()
    report = build(spec, dataset, jobs=jobs, mode=mode)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    stages = []
    for label, target, key in keys:
        _cc, calls, _tt, cumulative, _callers = stats.get(key, (0, 0, 0.0, 0.0, {}))
        stages.append([label, target, cumulative, calls])
    out = {"mode": mode or "fresh", "summary": report.summary(), "stages": stages,
           "top": _top(stats, 2), "main_nv": _top(stats, 3, only="nv_datalad", n=20),
           "threads": len(threads),
           # this process alone (git and git-annex children not included): is it the peak?
           "rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           # CPU seconds (user + system) of this process and of its git / git-annex children
           "cpu": [sum(getattr(resource.getrusage(who), f) for f in ("ru_utime", "ru_stime"))
                   for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]}
    if threads:
        merged = pstats.Stats(*threads).stats  # type: ignore[attr-defined]
        out["thread_top"] = _top(merged, 2)
        out["thread_nv"] = _top(merged, 3, only="nv_datalad")
    return out


def profile_build(case: Case, setup: Setup, work: Path, env: dict[str, str],
                  update_k: int = 0) -> dict:
    """A fresh build of ``case``, a no-op rebuild (``overwrite``) and, with ``update_k``, an
    update after that many images changed on the server: each under cProfile in its own
    worker. And what every build pays before ``build()`` starts: start-up, imports."""
    base = work / f"profile-{case.name}"
    logs = base / "logs"
    logs.mkdir(parents=True)
    startup = {label: measure(label, 0, argv, env, logs).seconds for label, argv in (
        ("python -c pass", [PY, "-c", "pass"]),
        ("import nv_datalad.pipeline", [PY, "-c", "import nv_datalad.pipeline"]),
        ("nv-datalad --help", [*NV_CLI, "--help"]),
    )}
    runs = []
    with serve(case, setup) as emu:
        spec = write_spec(base, emu.url)
        for what, mode in (("fresh", None), ("no-op", "overwrite"), ("update", "overwrite")):
            if what == "update":
                if update_k <= 0:
                    break
                ids = sorted(dataset_records(base / "ds"))
                for iid in ids[::max(1, len(ids) // update_k)][:update_k]:
                    emu.mutate_content(iid)
            m = measure(f"profile {what} build ({case.name})", 0,
                        worker_argv("profile", spec=str(spec), dataset=str(base / "ds"),
                                    jobs=setup.jobs, mode=mode), env, logs, emulator=emu)
            runs.append({"ok": m.ok, "seconds": m.seconds, "files": m.files,
                         "rss_tree_mb": m.peak_rss_mb, **m.info, "mode": what})
    return {"case": case.name, "startup": startup, "runs": runs}
