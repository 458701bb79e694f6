"""The one emulator command line, shared by ``nv-datalad emulator`` and
``python -m nv_datalad.emulator``: both build their parser with ``add_arguments`` and call ``run``.

Only constants are imported at module level, so building the nv-datalad parser stays instant;
the server is imported when it is started.
"""

from __future__ import annotations

import argparse
import logging
import time

from nv_datalad.emulator.constants import CORPORA, DEFAULT_BENCH_IMAGES, DEFAULT_PORT

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="loopback address to bind: 127.0.0.1 (default), ::1 or localhost; "
        "any other address is refused",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="port to listen on (default %(default)s, the port embedded builds "
        "register their URLs under; 0 picks a free one)",
    )
    parser.add_argument(
        "--corpus",
        choices=CORPORA,
        default="demo",
        help="demo: ~80 hand-planned images with every quirk of the real server; "
        "bench: a NeuroVault-shaped corpus of --images images "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        metavar="N",
        help=f"number of public images of the bench corpus (default {DEFAULT_BENCH_IMAGES})",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="bench corpus only: serve 4x4x4 volumes of a few hundred bytes, "
        "so a benchmark measures repository cost, not bytes",
    )
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the synthetic corpus: the same seed serves the same "
                             "records and bytes (default %(default)s)")  # fmt: skip


def serve_forever(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    corpus: str = "demo",
    n_images: int | None = None,
    seed: int = 0,
    tiny: bool = False,
) -> None:
    """Serve until interrupted (Ctrl-C)."""
    from nv_datalad.emulator.server import Emulator

    with Emulator(corpus, host, port, n_images=n_images, seed=seed, tiny=tiny) as emu:
        logger.info("NeuroVault emulator (%s corpus) serving at %s", corpus, emu.url)
        logger.info("API: %s/api/collections/ · Neurosynth: %s/api/decode/", emu.url, emu.url)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            logger.info("emulator stopped")


def run(args: argparse.Namespace) -> int:
    """Serve as ``args`` say; 0 after Ctrl-C, 2 for an option the emulator refuses, 1 if the
    port cannot be bound."""
    try:
        serve_forever(args.host, args.port, args.corpus, n_images=args.images, seed=args.seed,
                      tiny=args.tiny)  # fmt: skip
    except ValueError as exc:
        logger.error("emulator: %s", exc)
        return 2
    except OSError as exc:
        logger.error("emulator: cannot listen on %s port %s: %s", args.host, args.port, exc)
        return 1
    except KeyboardInterrupt:
        logger.info("emulator stopped")
    return 0
