"""``nv-datalad``: a thin argparse layer over the Python API.

The CLI renders: log records become one-line messages on stderr, progress bars appear only on
a terminal, results become a summary. Errors the user can fix are one line and exit status 2;
a traceback only with ``--debug``. Heavy modules are imported by the command that needs them.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from nv_datalad import cluster
from nv_datalad._version import __version__
from nv_datalad.errors import NvDataladError
from nv_datalad.options import CITE_FORMATS, DEFAULT_CHECKPOINT, DEFAULT_JOBS, MAX_JOBS, MODES

log = logging.getLogger("nv_datalad")


def _add_dataset(p: argparse.ArgumentParser, default: str | None = ".") -> None:
    p.add_argument("-d", "--dataset", default=default, metavar="PATH",
                   help="the dataset (default: %(default)s)")


def _bounded(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high], with a message naming the bounds."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: use a number {span}")
        return value
    return parse


def _logging_flags(p: argparse.ArgumentParser, default: object) -> None:
    """--debug/-q before or after the command (after: SUPPRESS keeps the global value)."""
    p.add_argument("--debug", action="store_true", default=default,
                   help="show tracebacks and debug logs")
    p.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="only warnings and errors")


def _wanted(argv: Sequence[str] | None) -> str:
    """The command ``argv`` names (its first word that is not an option), "" if none.

    Only that command's arguments are defined: the emulator, resampling, NiMARE and report
    modules that define theirs cost ~0.3 s to import, which every command would pay.
    """
    for word in sys.argv[1:] if argv is None else argv:
        if not word.startswith("-"):
            return word
    return ""


def make_parser(command: str) -> argparse.ArgumentParser:
    """The parser with ``command``'s arguments; the other commands get their one-line help
    only (enough for ``--help`` and for an unknown command's message)."""
    parser = argparse.ArgumentParser(
        prog="nv-datalad",
        description="NeuroVault statistical maps as versioned, citable DataLad datasets.",
    )
    parser.add_argument("--version", action="version", version=f"nv-datalad {__version__}")
    _logging_flags(parser, False)
    common = argparse.ArgumentParser(add_help=False)
    _logging_flags(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    jobs = _bounded(1, MAX_JOBS)

    p = sub.add_parser("build", help="create or update a dataset from a spec", parents=[common])
    p.add_argument("spec", help="the YAML spec")
    p.add_argument("-d", "--dataset", default=None, metavar="PATH",
                   help="the dataset (default: the dataset you stand in, else ./<spec name>)")
    p.add_argument("--mode", choices=MODES, help="override the spec's mode")
    p.add_argument("-J", "--jobs", type=jobs, default=DEFAULT_JOBS,
                   help=f"parallel downloads, 1 to {MAX_JOBS} (default {DEFAULT_JOBS})")
    p.add_argument("--server", help="override the spec's server URL (or 'embedded')")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--prune", action="store_true",
                   help="remove images that vanished or no longer match (kept by default)")
    p.add_argument("--recheck", action="store_true",
                   help="re-check every image's file on the server, whatever its modify_date")
    p.add_argument("--checkpoint", type=_bounded(1), default=DEFAULT_CHECKPOINT, metavar="N",
                   help=f"commit every N new images (default {DEFAULT_CHECKPOINT})")
    cluster.add_build_arguments(p)
    cluster.add_commands(sub, common)

    p = sub.add_parser("diff", help="images added/changed/removed between two versions",
                       parents=[common])
    _add_dataset(p)
    p.add_argument("old", nargs="?", help="tag or commit (default: the previous tag)")
    p.add_argument("new", nargs="?", help="tag or commit (default: HEAD)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("get", help="datalad get the images whose metadata matches",
                       parents=[common])
    _add_dataset(p)
    p.add_argument("--where", action="append", required=True, metavar="EXPR",
                   help="FIELD=VALUE, FIELD>=N, FIELD~=REGEX, FIELD=null ... (repeatable, ANDed)")
    p.add_argument("--resampled", action="store_true", help="get the resampled derivatives")
    p.add_argument("-J", "--jobs", type=jobs, default=None,
                   help=f"parallel transfers, 1 to {MAX_JOBS} (default: DataLad's)")

    p = sub.add_parser("cite", help="how to cite this exact dataset version", parents=[common])
    _add_dataset(p)
    p.add_argument("--version", dest="at", metavar="TAG", help="tag or commit (default: HEAD)")
    p.add_argument("--format", choices=CITE_FORMATS, default=CITE_FORMATS[0],
                   help="text (a paragraph and the list of collections), bibtex, or cff "
                        "(CITATION.cff); default: %(default)s")

    p = sub.add_parser("verify", help="check the dataset against the server and its content",
                       parents=[common])
    _add_dataset(p)
    p.add_argument("--server", help="override the recorded server URL")
    p.add_argument("--no-fsck", action="store_true", help="skip git annex fsck")

    p = sub.add_parser("emulator", help="serve the bundled NeuroVault emulator",
                       parents=[common])
    if command == "emulator":
        from nv_datalad.emulator import cli as emulator_cli

        emulator_cli.add_arguments(p)

    p = sub.add_parser("resample", help="resample images listed in a manifest (datalad run)",
                       parents=[common])
    if command == "resample":
        from nv_datalad.derivatives import resample

        resample.add_arguments(p)

    p = sub.add_parser("vectorize-words", help="Neurosynth word matrix (datalad run)",
                       parents=[common])
    if command == "vectorize-words":
        from nv_datalad.derivatives import neurosynth

        neurosynth.add_arguments(p)

    sub.add_parser("schema", help="print the JSON Schema of the spec", parents=[common])

    p = sub.add_parser("export", help="export a dataset version for another tool")
    targets = p.add_subparsers(dest="target", required=True, metavar="TOOL")
    p = targets.add_parser("nimare", help="NiMARE Dataset or NIMADS studyset (meta-analysis)",
                           parents=[common])
    _add_dataset(p)
    if command == "export":
        from nv_datalad.consumers import nimare

        nimare.add_arguments(p)

    p = sub.add_parser("report", help="an HTML page of counts, glass brains, history, citation",
                       parents=[common])
    _add_dataset(p)
    if command == "report":
        from nv_datalad.consumers import report

        report.add_arguments(p)
    p.add_argument("-J", "--jobs", type=jobs, default=None,
                   help=f"parallel transfers for --get, 1 to {MAX_JOBS} (default: DataLad's)")
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
    # DataLad narrates each step at INFO; our own log says what matters. DataLad reads its
    # level from the environment when it is imported (later, and in `datalad run` children).
    level = "debug" if debug else "warning"
    os.environ.setdefault("DATALAD_LOG_LEVEL", level)
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

    if args.slurm or args.local_array:
        return cluster.build(args)
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
    return report.exit_status


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


def _cmd_export(args: argparse.Namespace) -> int:
    from nv_datalad.consumers import nimare

    result = nimare.export(Path(args.dataset), args.where, args.at,
                           require_sample_size=args.require_sample_size)
    nimare.write(result, Path(args.output), args.format)
    for line in nimare.summary_lines(result, Path(args.output), args.format):
        print(line)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from nv_datalad.consumers.report import report

    result = report(Path(args.dataset), args.output, args.at, get=args.get, jobs=args.jobs)
    print(result.summary())
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
    "export": _cmd_export,
    "report": _cmd_report,
    "job-task": cluster.task,
    "job-finalise": cluster.finalise,
    "job-resubmit": cluster.resubmit,
}


def main(argv: Sequence[str] | None = None) -> int:
    from nv_datalad.dataset.runner import ensure_tools_on_path

    parser = make_parser(_wanted(argv))
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
    except KeyboardInterrupt as exc:
        done = getattr(exc, "committed", None)
        kept = f"{done} images that had landed are committed; " if done else ""
        print(f"nv-datalad {args.command}: interrupted; {kept}the dataset is valid, run the "
              "same command again to finish", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `nv-datalad get ... | head`: the reader left, not an error
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stop the flush at exit
        return 0
    except OSError as exc:
        if exc.errno != errno.ENOSPC or args.debug:
            raise
        # A full disk anywhere (download, sidecar, git): what landed is kept, the next build
        # (with space) recovers and finishes. Status 1: finished, not everything done.
        where = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else exc
        print(f"nv-datalad {args.command}: error: disk full ({where}); free some space and run "
              "the same command again", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
