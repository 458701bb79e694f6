"""Where a build's time goes: one fresh build under cProfile, time per pipeline stage.

The stages are named by the functions that implement them (``module:qualname``). Each is
resolved to its code object before anything is measured, and a name that no longer exists
stops the benchmark with exit status 2 naming it: the profile of an earlier version listed
functions that had been renamed away and reported nothing for them, silently.

The build runs in-process in a worker subprocess (``workers.py profile``), profiled with the
wall clock. cProfile sees the calling thread only; time spent in download or crawl threads
shows up as the cumulative time of the main-thread function that waits for them.

(The module is not called ``profile``: cProfile imports the standard library's ``profile``,
which a ``benchmarks/profile.py`` would shadow when the scripts run from ``benchmarks/``.)
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from measure import log, measure, worker_argv
from scenarios import Case, Setup, serve, write_spec

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


def work_profile(spec: str, dataset: str, jobs: int) -> dict:
    """The worker: ``pipeline.build`` under cProfile; stage rows and top own-time functions."""
    import cProfile
    import pstats

    keys = stage_keys()
    from nv_datalad.dataset.runner import ensure_tools_on_path
    from nv_datalad.pipeline import build

    ensure_tools_on_path()
    profiler = cProfile.Profile(time.perf_counter)
    profiler.enable()
    report = build(spec, dataset, jobs=jobs)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    stages = []
    for label, target, key in keys:
        _cc, calls, _tt, cumulative, _callers = stats.get(key, (0, 0, 0.0, 0.0, {}))
        stages.append([label, target, cumulative, calls])
    own = sorted(((f"{Path(fn).name}:{line}({name})", tt, nc)
                  for (fn, line, name), (_cc, nc, tt, _ct, _callers) in stats.items()),
                 key=lambda row: -row[1])
    return {"summary": report.summary(), "stages": stages, "top": [list(r) for r in own[:12]]}


def profile_build(case: Case, setup: Setup, work: Path, env: dict[str, str]) -> dict:
    """One fresh build of ``case`` under cProfile; its stage times, from the worker."""
    base = work / f"profile-{case.name}"
    logs = base / "logs"
    logs.mkdir(parents=True)
    with serve(case, setup) as emu:
        spec = write_spec(base, emu.url)
        m = measure(f"profile fresh build ({case.name})", 0,
                    worker_argv("profile", spec=str(spec), dataset=str(base / "ds"),
                                jobs=setup.jobs), env, logs, emulator=emu)
    return {"case": case.name, "ok": m.ok, "seconds": m.seconds, **m.info}
