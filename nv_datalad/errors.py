"""Exception family: one class per layer, each carrying what the user needs to act.

The CLI maps :class:`NvDataladError` subclasses to exit status 2 and prints ``str(err)`` as one
line; anything else is a bug and shows a traceback only with ``--debug``.
"""

from __future__ import annotations


class NvDataladError(Exception):
    """Base class: a problem the user can fix (bad spec, environment, unreachable server)."""

    exit_status = 2


class SpecError(NvDataladError):
    """A spec file is invalid. ``str()`` is ``file:line key.path: problem; fix``."""

    def __init__(self, message: str, *, source: str = "", line: int | None = None, key: str = ""):
        self.source = source
        self.line = line
        self.key = key
        self.problem = message
        where = source
        if line is not None:
            where = f"{where}:{line}" if where else f"line {line}"
        prefix = " ".join(p for p in (where, key) if p)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class EnvironmentProblem(NvDataladError):
    """Something outside the spec is missing or wrong (git identity, git-annex, a lock)."""


class DatasetError(NvDataladError):
    """The target dataset is not usable (not a nv-datalad dataset, locked, unknown version)."""


class NeuroVaultError(NvDataladError):
    """An HTTP exchange with NeuroVault (or the emulator) failed after retries."""

    def __init__(self, message: str, *, url: str = "", status_code: int | None = None):
        self.url = url
        self.status_code = status_code
        detail = f" (HTTP {status_code})" if status_code else ""
        super().__init__(f"{message}{detail}: {url}" if url else f"{message}{detail}")


class NotFound(NeuroVaultError):
    """404 for a collection or image id."""


class Forbidden(NeuroVaultError):
    """403: a private collection."""


class AnnexError(NvDataladError):
    """A git-annex batch process failed, stalled or exited early."""
