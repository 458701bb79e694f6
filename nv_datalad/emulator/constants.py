"""What the emulator is called and where it may listen: constants every entry point shares.

Kept free of numpy and the HTTP machinery so that building the CLI's parser (which reads
``CORPORA`` and ``DEFAULT_PORT``) costs nothing.
"""

from __future__ import annotations

import ipaddress
import os

#: The corpora the emulator can serve (see ``plans`` and ``bench``).
CORPORA = ("demo", "bench")
#: The port ``server: embedded`` builds and ``nv-datalad emulator`` share, so URLs registered by
#: an embedded build are served again later by the command. ``NV_DATALAD_EMBEDDED_PORT`` moves
#: both (when 38591 is taken, or for a test that must not meet another emulator there).
PORT_VARIABLE = "NV_DATALAD_EMBEDDED_PORT"
DEFAULT_PORT = int(os.environ.get(PORT_VARIABLE) or 38591)
#: Size of the ``bench`` corpus when none is asked for.
DEFAULT_BENCH_IMAGES = 1000
#: nilearn's real sample map, served byte for byte in the demo corpus.
SAMPLE_IMAGE_ID = 10426


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (a scope suffix is ignored)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def check_loopback_host(host: str) -> str:
    """``host`` if it is a loopback address; else a ValueError that says why.

    The emulator's control endpoint changes the corpus and its faults: it must never be reachable
    from another machine, so the server only binds loopback addresses.
    """
    if host == "localhost" or is_loopback(host):
        return host
    raise ValueError(
        f"refusing to listen on {host!r}: the emulator serves loopback only "
        "(use 127.0.0.1, ::1 or localhost)"
    )
