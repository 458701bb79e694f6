"""``python -m nv_datalad.emulator``: serve the emulator without the nv-datalad CLI."""

from __future__ import annotations

import argparse
import logging

from nv_datalad.emulator.cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nv_datalad.emulator", description="Serve the NeuroVault emulator."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
