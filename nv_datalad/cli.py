"""``nv-datalad``: a thin argparse layer over the Python API.

The CLI renders: log records become one-line messages on stderr, progress bars appear only on
a terminal, results become a summary. Errors the user can fix are one line and exit status 2;
a traceback only with ``--debug``. Heavy modules are imported by the command that needs them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from nv_datalad._version import __version__
from nv_datalad.errors import NvDataladError

log = logging.getLogger("nv_datalad")


def _add_dataset(p: argparse.ArgumentParser, default: str | None = ".") -> None:
    p.add_argument("-d", "--dataset", default=default, metavar="PATH",
                   help="the dataset (default: %(default)s)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nv-datalad",
        description="NeuroVault statistical maps as versioned, citable DataLad datasets.",
    )
    parser.add_argument("--version", action="version", version=f"nv-datalad {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("build", help="create or update a dataset from a spec")
    p.add_argument("spec", help="the YAML spec")
    _add_dataset(p, default=None)
    p.add_argument("--mode", choices=["download_new", "overwrite", "offline"],
                   help="override the spec's mode")
    p.add_argument("-J", "--jobs", type=int, default=4, help="parallel downloads (default 4)")
    p.add_argument("--server", help="override the spec's server URL (or 'embedded')")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--prune", action="store_true",
                   help="remove images that vanished or no longer match (kept by default)")
    p.add_argument("--recheck", action="store_true",
                   help="re-check every image's file on the server, whatever its modify_date")
    p.add_argument("--checkpoint", type=int, default=500, metavar="N",
                   help="commit every N new images (default 500)")

    p = sub.add_parser("diff", help="images added/changed/removed between two versions")
    _add_dataset(p)
    p.add_argument("old", nargs="?", help="tag or commit (default: the previous tag)")
    p.add_argument("new", nargs="?", help="tag or commit (default: HEAD)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("get", help="datalad get the images whose metadata matches")
    _add_dataset(p)
    p.add_argument("--where", action="append", required=True, metavar="EXPR",
                   help="FIELD=VALUE, FIELD>=N, FIELD~=REGEX, FIELD=null ... (repeatable, ANDed)")
    p.add_argument("--resampled", action="store_true", help="get the resampled derivatives")
    p.add_argument("-J", "--jobs", type=int, default=None)

    p = sub.add_parser("cite", help="how to cite this exact dataset version")
    _add_dataset(p)
    p.add_argument("--version", dest="at", metavar="TAG", help="tag or commit (default: HEAD)")
    p.add_argument("--format", choices=["text", "bibtex", "cff"], default="text")

    p = sub.add_parser("verify", help="check the dataset against the server and its content")
    _add_dataset(p)
    p.add_argument("--server", help="override the recorded server URL")
    p.add_argument("--no-fsck", action="store_true", help="skip git annex fsck")

    p = sub.add_parser("emulator", help="serve the bundled NeuroVault emulator")
    from nv_datalad.emulator import cli as emulator_cli

    emulator_cli.add_arguments(p)

    p = sub.add_parser("resample", help="resample images listed in a manifest (datalad run)")
    from nv_datalad.derivatives import resample

    resample.add_arguments(p)

    p = sub.add_parser("vectorize-words", help="Neurosynth word matrix (datalad run)")
    from nv_datalad.derivatives import neurosynth

    neurosynth.add_arguments(p)

    sub.add_parser("schema", help="print the JSON Schema of the spec")
    return parser


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {msg}"
        return msg


def _setup_logging(debug: bool, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(levelname)s %(name)s: %(message)s") if debug else _OneLine()
    )
    root = logging.getLogger("nv_datalad")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    root.propagate = False
    # DataLad narrates each step at INFO; our own log says what matters.
    logging.getLogger("datalad").setLevel(logging.DEBUG if debug else logging.WARNING)


class _Bars:
    """tqdm bars per stage, on a terminal only (quiet in pipes and CI logs)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bars: dict[str, object] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit="img", leave=False)
        bar.n = done  # type: ignore[attr-defined]
        bar.refresh()  # type: ignore[attr-defined]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()  # type: ignore[attr-defined]


def _cmd_build(args: argparse.Namespace) -> int:
    from nv_datalad.pipeline import build

    bars = _Bars(sys.stderr.isatty() and not args.quiet)
    try:
        report = build(args.spec, args.dataset, mode=args.mode, jobs=args.jobs,
                       server=args.server, dry_run=args.dry_run, prune=args.prune,
                       recheck=args.recheck, checkpoint=args.checkpoint, progress=bars)
    finally:
        bars.close()
    if args.dry_run:
        print(report.summary())
        return 0
    for r in report.failed:
        log.warning("%s", r.message)
    print(f"{report.dataset}: {report.summary()}")
    return report.exit_status


def _cmd_diff(args: argparse.Namespace) -> int:
    from nv_datalad.consumers.diff import diff, format_diff

    result = diff(Path(args.dataset), args.old, args.new)
    print(json.dumps(result.as_dict(), indent=2) if args.json else format_diff(result))
    return 0


def _cmd_get(args: argparse.Namespace) -> int:
    from nv_datalad.consumers.get import get
    from nv_datalad.spec.where import explain_annex_equivalent

    results = get(Path(args.dataset), args.where, resampled=args.resampled, jobs=args.jobs)
    for r in results:
        print(f"{r.status.value}: {r.path}" + (f" ({r.message})" if r.message else ""))
    line, note = explain_annex_equivalent(args.where)
    print(f"plain git-annex: {line}" if line else f"plain git-annex: {note}")
    return 1 if any(r.failed for r in results) else 0


def _cmd_cite(args: argparse.Namespace) -> int:
    from nv_datalad.consumers.cite import citation, render

    print(render(citation(Path(args.dataset), args.at), args.format))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from nv_datalad.consumers.verify import verify

    report = verify(Path(args.dataset), server=args.server, fsck=not args.no_fsck)
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def _cmd_emulator(args: argparse.Namespace) -> int:
    from nv_datalad.emulator import cli as emulator_cli

    return emulator_cli.run(args)


def _cmd_resample(args: argparse.Namespace) -> int:
    from nv_datalad.derivatives import resample

    return resample.main_from_args(args)


def _cmd_vectorize(args: argparse.Namespace) -> int:
    from nv_datalad.derivatives import neurosynth

    return neurosynth.main_from_args(args)


def _cmd_schema(args: argparse.Namespace) -> int:
    from nv_datalad.spec import schema

    print(json.dumps(schema(), indent=2))
    return 0


COMMANDS = {
    "build": _cmd_build,
    "diff": _cmd_diff,
    "get": _cmd_get,
    "cite": _cmd_cite,
    "verify": _cmd_verify,
    "emulator": _cmd_emulator,
    "resample": _cmd_resample,
    "vectorize-words": _cmd_vectorize,
    "schema": _cmd_schema,
}


def main(argv: Sequence[str] | None = None) -> int:
    from nv_datalad.dataset.runner import ensure_tools_on_path

    parser = make_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.debug, args.quiet)
    ensure_tools_on_path()
    try:
        return COMMANDS[args.command](args)
    except NvDataladError as exc:
        if args.debug:
            raise
        print(f"nv-datalad {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("nv-datalad: interrupted; the dataset is valid and the next build resumes",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
