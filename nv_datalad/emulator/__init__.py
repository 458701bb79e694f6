"""A NeuroVault emulator: NeuroVault's REST API, media files and the Neurosynth decoder, served
on loopback over a deterministic synthetic corpus, with knobs for mutations, faults and network
conditions. nv-datalad's tests, its ``server: embedded`` mode and the ``nv-datalad emulator``
command all use it; nilearn's ``fetch_neurovault`` can be pointed at it too.

    from nv_datalad.emulator import Emulator
    with Emulator(corpus="demo", port=0) as emu:
        requests.get(f"{emu.url}/api/collections/").json()
"""

from .corpus import CORPORA, SAMPLE_IMAGE_ID
from .server import DEFAULT_PORT, Emulator, Faults, Network, serve_forever

__all__ = [
    "CORPORA",
    "DEFAULT_PORT",
    "SAMPLE_IMAGE_ID",
    "Emulator",
    "Faults",
    "Network",
    "serve_forever",
]
