"""A NeuroVault emulator: NeuroVault's REST API, media files and the Neurosynth decoder, served
on loopback over a deterministic synthetic corpus, with knobs for mutations, hostile records,
faults and network conditions. nv-datalad's tests, its ``server: embedded`` mode and the
``nv-datalad emulator`` command all use it; nilearn's ``fetch_neurovault`` can be pointed at it.

    from nv_datalad.emulator import Emulator
    with Emulator(corpus="demo", port=0) as emu:
        requests.get(f"{emu.url}/api/collections/").json()

Where things are: ``plans`` (the demo corpus) and ``bench`` (the scalable one) say what exists;
``records`` writes the JSON; ``state`` and ``corpus`` hold what exists now and change it;
``hostile`` lists the bad records a client must refuse; ``routes`` answers requests, ``faults``
spoils the answers, ``server`` runs the HTTP side, ``control`` is its loopback remote control,
``cli`` its command line. Names are imported on first use, so the CLI's parser stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nv_datalad.emulator.cli import serve_forever
    from nv_datalad.emulator.constants import CORPORA, DEFAULT_PORT, SAMPLE_IMAGE_ID
    from nv_datalad.emulator.faults import Faults, Network
    from nv_datalad.emulator.server import Emulator

_HOMES = {
    "CORPORA": "constants",
    "DEFAULT_PORT": "constants",
    "SAMPLE_IMAGE_ID": "constants",
    "Emulator": "server",
    "Faults": "faults",
    "Network": "faults",
    "serve_forever": "cli",
}

__all__ = [
    "CORPORA",
    "DEFAULT_PORT",
    "SAMPLE_IMAGE_ID",
    "Emulator",
    "Faults",
    "Network",
    "serve_forever",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
