"""Builds beyond one machine: SLURM job arrays through a RIA store (the FAIRly-big pattern).

``submit`` plans on the submit host and publishes a job; ``task`` is one array task (clone,
build a unit, push); ``finalise`` merges the units and releases one version. ``units`` is the
pure split of a plan, ``job`` the manifest they all read. The command-line options live here
so the CLI stays a thin table.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("on a cluster (needs `ria: {store: ...}` in the spec)")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--slurm", action="store_true",
                       help="plan here, run one SLURM array task per unit, then finalise")
    where.add_argument("--local-array", action="store_true",
                       help="the same tasks as processes on this machine")
    g.add_argument("--tasks", type=int, default=4, metavar="N",
                   help="units of work (array tasks), default 4")
    g.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                   help="passed to sbatch, e.g. --sbatch-arg=--time=2:00:00 (repeatable)")
    g.add_argument("--wait", action="store_true", help="block until the finalise job ended")


def add_commands(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("job-task", help="one array task of a cluster build (run by SLURM)",
                       parents=[common])
    p.add_argument("store")
    p.add_argument("dataset_id")
    p.add_argument("job")
    p.add_argument("unit", type=int)
    p.add_argument("--workdir", default="/tmp", help="node-local space for the clone")
    p.add_argument("-J", "--jobs", type=int, default=4)
    p = sub.add_parser("job-finalise", help="merge a cluster build's units, tag, check the "
                       "store", parents=[common])
    p.add_argument("-d", "--dataset", default=".", metavar="PATH")
    p.add_argument("job")
    p = sub.add_parser("job-resubmit", help="run a cluster build's failed units again",
                       parents=[common])
    p.add_argument("-d", "--dataset", default=".", metavar="PATH")
    p.add_argument("job")
    p.add_argument("--units", type=lambda s: [int(u) for u in s.split(",")], default=None,
                   help="comma-separated units (default: those the finalise step missed)")
    p.add_argument("--local-array", action="store_true")
    p.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG")
    p.add_argument("--wait", action="store_true")


def build(args: argparse.Namespace) -> int:
    from nv_datalad.cluster.submit import submit

    out = submit(args.spec, args.dataset, tasks=args.tasks, local=args.local_array,
                 sbatch_args=args.sbatch_arg, wait=args.wait, jobs=args.jobs,
                 mode=args.mode, server=args.server, prune=args.prune)
    print(out.summary())
    return out.exit_status


def task(args: argparse.Namespace) -> int:
    from nv_datalad.cluster.task import run_task

    return run_task(args.store, args.dataset_id, args.job, args.unit,
                    workdir=Path(args.workdir), jobs=args.jobs)


def finalise(args: argparse.Namespace) -> int:
    from nv_datalad.cluster.submit import finalise_locked

    root = Path(args.dataset).absolute()
    out = finalise_locked(root, args.job)
    print(out.summary(root))
    return out.exit_status


def resubmit(args: argparse.Namespace) -> int:
    from nv_datalad.cluster.submit import resubmit as again

    out = again(Path(args.dataset), args.job, args.units, local=args.local_array,
                sbatch_args=args.sbatch_arg, wait=args.wait)
    print(out.summary())
    return out.exit_status
