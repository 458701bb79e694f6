"""Which server a build or a verify talks to: a URL, or the bundled emulator in-process.

``server: embedded`` makes the README's first command work with no internet. The embedded
emulator listens on a fixed loopback port so the URLs a demo build registers are served again
later by ``nv-datalad emulator``; when that port already serves an emulator, it is used as is.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from nv_datalad.errors import EnvironmentProblem
from nv_datalad.options import EMBEDDED

log = logging.getLogger(__name__)


@contextlib.contextmanager
def serving(server: str) -> Iterator[str]:
    """The base URL to talk to while the context lasts."""
    if server != EMBEDDED:
        yield server
        return
    from nv_datalad.emulator import DEFAULT_PORT, Emulator

    url = f"http://127.0.0.1:{DEFAULT_PORT}"
    try:
        emu = Emulator(corpus="demo", port=DEFAULT_PORT)
        emu.start()
    except OSError as exc:
        import requests

        try:
            requests.get(url + "/api/collections/?limit=1", timeout=5).raise_for_status()
        except requests.RequestException:
            raise EnvironmentProblem(
                f"port {DEFAULT_PORT} for the embedded emulator is in use by something else "
                f"({exc}); free it or run `nv-datalad emulator --port P` and pass --server"
            ) from None
        log.info("using the emulator already serving at %s", url)
        yield url
        return
    log.info("embedded NeuroVault emulator serving at %s", emu.url)
    try:
        yield emu.url
    finally:
        emu.stop()
