"""``python -m nv_datalad.emulator``: serve the emulator without the nv-datalad CLI."""

from __future__ import annotations

import argparse
import logging

from .corpus import CORPORA
from .server import DEFAULT_PORT, serve_forever


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m nv_datalad.emulator", description="Serve the NeuroVault emulator."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--corpus", choices=CORPORA, default="demo")
    parser.add_argument("--n-images", type=int, default=None, help="size of the bench corpus")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    serve_forever(args.host, args.port, args.corpus, n_images=args.n_images, seed=args.seed)


if __name__ == "__main__":
    main()
