"""Mutation testing of nv-datalad's core modules with cosmic-ray (issue 17).

    python tools/mutation.py                 # every core module (hours on 2 cores)
    python tools/mutation.py plan filters    # the named ones
    python tools/mutation.py --list          # the modules and the tests run against each
    python tools/mutation.py --survivors cite    # only the last run's survivors, again

Each module is mutated in its own copy of the tree (the work tree is never touched, so it is
safe while others edit it), and each mutant runs only the tests that should catch a break in
that module (``MODULES``), with ``-x`` so a killed mutant stops at its first failing test.
cosmic-ray lives in a scratch venv made on first use (``--work-dir``, from the project's
``[project.optional-dependencies] mutation`` pin); the tests run with the project's Python.
Mutants of type annotations are skipped before the run: with ``from __future__ import
annotations`` they are never evaluated, so they are equivalent by construction.

It prints, per module, the score (killed / (killed + survived); a timeout counts as killed)
and every surviving mutant as ``path:line operator (function)`` with its source line; the same
goes to ``<work-dir>/report.json`` (one entry per module, the newest run of each).
``--survivors`` reuses a module's session when its source is unchanged and runs only the mutants
that survived, so new tests are checked in minutes. tools/README.md lists the survivors judged
equivalent.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("mutation")

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("nv_datalad", "tests", "specs", "pyproject.toml", "README.md")
PYTEST = ["-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
MUTANTS = "tests/test_mutants.py"
#: The property tests (filters) draw the same examples for every mutant.
SEEDED = "--hypothesis-seed=0"
#: Unit-test files import neither hypothesis nor DataLad: without their pytest plugins each
#: mutant's run starts in ~0.5 s instead of ~2 s.
UNIT = ["-p", "no:hypothesispytest", "-p", "no:datalad"]

#: name -> (module, the tests that should catch a break in it): for most, a unit-test file of
#: their own (tests/test_units_*.py) on tiny repositories and the emulator, seconds a mutant.
MODULES: dict[str, tuple[str, list[str]]] = {
    "plan": ("nv_datalad/pipeline/plan.py", [
        SEEDED, "tests/test_update.py", "-k", "planner or semantic or download_new_leaves or "
        "recheck_forces or moved or dry_run", "tests/test_build.py", MUTANTS]),
    "filters": ("nv_datalad/spec/filters.py", [
        SEEDED, "tests/test_filters.py", "tests/test_spec.py",
        *(f"{MUTANTS}::test_filters_{name}" for name in (
            "read_from_a_spec_file_keep_their_meaning",
            "null_operator_given_false_names_its_opposite",
            "bad_pattern_flags_are_pointed_at_by_line_and_key"))]),
    "revision": ("nv_datalad/dataset/revision.py", [*UNIT, "tests/test_units_revision.py"]),
    "citation": ("nv_datalad/citation.py", [*UNIT, "tests/test_units_citation.py"]),
    "cite": ("nv_datalad/consumers/cite.py", [*UNIT, "tests/test_units_cite.py"]),
    "verify": ("nv_datalad/consumers/verify.py", [*UNIT, "tests/test_units_verify.py"]),
    "download": ("nv_datalad/neurovault/download.py", [
        *UNIT, "tests/test_units_download.py"]),
    "recover": ("nv_datalad/dataset/recover.py", [*UNIT, "tests/test_units_recover.py"]),
    "annex": ("nv_datalad/dataset/annex.py", [*UNIT, "tests/test_units_annex.py"]),
    "select": ("nv_datalad/pipeline/select.py", [
        *UNIT, "tests/test_units_select.py", "tests/test_selection.py"]),
}


def _pin() -> list[str]:
    """The cosmic-ray requirement, as pyproject.toml's ``mutation`` extra states it."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(data["project"]["optional-dependencies"]["mutation"])


def _bootstrap(work: Path) -> Path:
    """A scratch venv with cosmic-ray (made once), so the project's venv stays as it is."""
    venv = work / "venv"
    python = venv / "bin" / "python"
    if not (venv / "bin" / "cosmic-ray").exists():
        log.info("installing %s into %s", " ".join(_pin()), venv)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *_pin()], check=True)
    return python


def _copy_tree(dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore, symlinks=True)
        elif src.is_file():
            shutil.copy2(src, dest / name)
    return dest


def _env(tree: Path) -> dict[str, str]:
    """The copy comes first on sys.path, in the tests and in every CLI subprocess they run."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    env["PATH"] = str(Path(env.get("NV_MUTATION_PYTHON", sys.executable)).parent) + \
        os.pathsep + env.get("PATH", "")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(path: Path, module: str, command: str, timeout: float, urls: list[str]) -> None:
    worker = (f'[cosmic-ray.distributor]\nname = "http"\n\n[cosmic-ray.distributor.http]\n'
              f"worker-urls = {json.dumps(urls)}\n") if urls else \
        '[cosmic-ray.distributor]\nname = "local"\n'
    path.write_text(f'[cosmic-ray]\nmodule-path = "{module}"\ntimeout = {timeout:.0f}\n'
                    f"excluded-modules = []\ntest-command = {json.dumps(command)}\n\n{worker}")


def _annotation_spans(source: str) -> set[tuple[int, int, int, int]]:
    """(start line, start column, end line, end column) of every type annotation."""
    spans = set()
    for node in ast.walk(ast.parse(source)):
        notes = []
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            notes.append(node.annotation)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
            notes.append(node.returns)
        spans |= {(n.lineno, n.col_offset, n.end_lineno or n.lineno, n.end_col_offset or 0)
                  for n in notes}
    return spans


def _inside(pos: list[int], spans: set[tuple[int, int, int, int]]) -> bool:
    line, col = pos
    return any((a, b) <= (line, col) < (c, d) for a, b, c, d in spans)


def _skip_annotations(session: Path, source: str) -> int:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    spans = _annotation_spans(source)
    skipped = 0
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in db.pending_work_items:
            if all(_inside(m.start_pos, spans) for m in item.mutations):
                db.set_result(item.job_id, WorkResult(
                    output="type annotation: never evaluated",
                    worker_outcome=WorkerOutcome.SKIPPED))
                skipped += 1
    return skipped


@contextlib.contextmanager
def _workers(trees: list[Path], cosmic_ray: Path) -> Iterator[list[str]]:
    """One cosmic-ray http worker per copy of the tree (each mutates only its own copy)."""
    procs, urls = [], []
    try:
        for tree in trees:
            port = _free_port()
            procs.append(subprocess.Popen(
                [str(cosmic_ray), "http-worker", "--port", str(port)], cwd=tree,
                env=_env(tree), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:  # wait until each listens
            port = int(url.rsplit(":", 1)[1])
            for _ in range(100):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.1)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


def _source_hash(tree: Path, module: str) -> str:
    return hashlib.sha256((tree / module).read_bytes()).hexdigest()


def _forget_survivors(session: Path) -> int:
    """Make the last run's survivors pending again; every other result is kept."""
    with contextlib.closing(sqlite3.connect(session)) as db, db:
        return db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'").rowcount


def run_module(name: str, work: Path, workers: int, python: str,
               survivors_only: bool = False) -> dict:
    module, tests = MODULES[name]
    cosmic_ray = Path(sys.executable).parent / "cosmic-ray"
    base = work / name
    trees = [_copy_tree(base / f"tree{i}") for i in range(max(1, workers))]
    command = " ".join([python, *PYTEST, *(f"'{t}'" if " " in t else t for t in tests)])
    started = time.monotonic()
    baseline = subprocess.run(command, shell=True, cwd=trees[0], env=_env(trees[0]),
                              capture_output=True, text=True)
    took = time.monotonic() - started
    if baseline.returncode != 0:
        return {"module": module, "error": "the tests fail without any mutation:\n"
                + baseline.stdout[-2000:]}
    session, config = base / "session.sqlite", base / "config.toml"
    stamp, source = base / "source.sha256", _source_hash(trees[0], module)
    again = survivors_only and session.is_file() and stamp.is_file() and \
        stamp.read_text() == source
    if survivors_only and not again:
        log.info("%s changed since its last run (or never ran): running every mutant", module)
    timeout = max(60.0, 3 * took + 30)
    with _workers(trees if workers > 1 else [], cosmic_ray) as urls:
        _config(config, module, command, timeout, urls)
        if again:
            log.info("%s: baseline %.0f s, %d survivors of the last run run again", module,
                     took, _forget_survivors(session))
        else:
            session.unlink(missing_ok=True)
            subprocess.run([str(cosmic_ray), "init", str(config), str(session)],
                           cwd=trees[0], check=True)
            stamp.write_text(source)
            skipped = _skip_annotations(session, (trees[0] / module).read_text())
            log.info("%s: baseline %.0f s, mutant timeout %.0f s, %d annotation mutants "
                     "skipped", module, took, timeout, skipped)
        subprocess.run([str(cosmic_ray), "exec", str(config), str(session)], cwd=trees[0],
                       env=_env(trees[0]), check=True)
    return {**_summary(module, session, (trees[0] / module).read_text().splitlines(), took),
            "source_sha256": source}


def _summary(module: str, session: Path, lines: list[str], baseline: float) -> dict:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    counts = {"killed": 0, "survived": 0, "incompetent": 0, "skipped": 0, "timeout": 0}
    survivors = []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                counts["skipped"] += 1
            elif result.test_outcome == TestOutcome.SURVIVED:
                counts["survived"] += 1
                m = item.mutations[0]
                survivors.append({
                    "where": f"{module}:{m.start_pos[0]}", "operator": m.operator_name,
                    "occurrence": m.occurrence, "function": m.definition_name,
                    "line": lines[m.start_pos[0] - 1].strip(), "diff": result.diff})
            elif result.test_outcome == TestOutcome.INCOMPETENT:
                counts["incompetent"] += 1
            else:
                counts["killed"] += 1
                counts["timeout"] += result.output == "timeout"
    judged = counts["killed"] + counts["survived"]
    survivors.sort(key=lambda s: int(s["where"].rsplit(":", 1)[1]))
    return {"module": module, **counts, "baseline_seconds": round(baseline, 1),
            "score": round(100 * counts["killed"] / judged, 1) if judged else None,
            "survivors": survivors}


def _print(results: list[dict]) -> None:
    for r in results:
        if "error" in r:
            print(f"{r['module']}: not run: {r['error']}")
            continue
        print(f"{r['module']} (sha256 {r.get('source_sha256', '?')[:12]}): score "
              f"{r['score']}% ({r['killed']} killed, {r['survived']} "
              f"survived, {r['timeout']} of the killed by timeout, {r['incompetent']} "
              f"incompetent, {r['skipped']} annotation mutants skipped)")
        for s in r["survivors"]:
            print(f"  survived {s['where']} {s['operator']}#{s['occurrence']} "
                  f"({s['function']}): {s['line']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help=f"names from: {', '.join(MODULES)} (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="parallel copies (default 2)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/nv-datalad-mutation"),
                        help="scratch directory: the venv, the copies, the sessions, the report")
    parser.add_argument("--list", action="store_true", help="list the modules and their tests")
    parser.add_argument("--survivors", action="store_true",
                        help="run again only the mutants that survived each module's last run "
                             "(after adding tests); a module changed since runs in full")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.list:
        for name, (module, tests) in MODULES.items():
            print(f"{name:9} {module}\n          {' '.join(tests)}")
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    try:
        import cosmic_ray  # noqa: F401
    except ImportError:  # run again inside the scratch venv, tests still on this Python
        python = _bootstrap(args.work_dir)
        env = dict(os.environ, NV_MUTATION_PYTHON=os.environ.get("NV_MUTATION_PYTHON",
                                                                 sys.executable))
        return subprocess.run([str(python), __file__, *(argv or sys.argv[1:])],
                              env=env).returncode
    python = os.environ.get("NV_MUTATION_PYTHON", sys.executable)
    results = []
    report = args.work_dir / "report.json"
    for name in args.modules or list(MODULES):
        results.append(run_module(name, args.work_dir, args.workers, python, args.survivors))
        earlier = json.loads(report.read_text()) if report.is_file() else []
        mine = {r["module"] for r in results}
        report.write_text(json.dumps([r for r in earlier if r["module"] not in mine] + results,
                                     indent=2))
        _print(results[-1:])
    print("\nsummary:")
    for r in results:
        print(f"  {r['module']}: " + (f"{r['score']}%" if "error" not in r else "not run"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
