"""Every user-facing choice and default, stated once.

The spec validator, the JSON Schema, the CLI's ``choices=`` and the derivative workers all read
these names, so a new interpolation or citation format is added in exactly one place. Pure
constants only: importing this module costs nothing.
"""

from __future__ import annotations

#: Where specs fetch from by default, and the word that starts the bundled emulator instead.
DEFAULT_SERVER = "https://neurovault.org"
EMBEDDED = "embedded"

#: nilearn's ``fetch_neurovault`` default.
DEFAULT_MAX_IMAGES = 100

#: Build modes, as nilearn names them.
MODES = ("download_new", "overwrite", "offline")

#: ``download``: checksum keys; ``register``: URL keys, nothing downloaded at build time.
CONTENTS = ("download", "register")

#: ``none``: one repository; ``per-collection``: one subdataset per collection.
SUBDATASETS = ("none", "per-collection")

#: Resampling: nilearn's interpolations and its 3 mm target grid (origin -90, -126, -72).
INTERPOLATIONS = ("continuous", "linear", "nearest")
DEFAULT_INTERPOLATION = "continuous"
DEFAULT_VOXEL_SIZE = 3.0
NILEARN_ORIGIN = (-90.0, -126.0, -72.0)

#: The public Neurosynth decoder; an emulator serves its own under ``/api/decode/``.
NEUROSYNTH_DECODE_URL = "https://neurosynth.org/api/decode/"

#: ``nv-datalad cite --format``.
CITE_FORMATS = ("text", "bibtex", "cff")

#: ``nv-datalad export nimare --format``: NiMARE's Dataset (JSON) or its NIMADS studyset.
EXPORT_FORMATS = ("dataset", "nimads")

#: Default number of parallel downloads / workers (``-J``), and the bounds ``-J`` accepts.
DEFAULT_JOBS = 4
MAX_JOBS = 64

#: Commit every N newly added images.
DEFAULT_CHECKPOINT = 500
