"""What goes wrong on the way out: random faults, one broken listing page, a slow network.

The router answers as a healthy server would; these settings then spoil that answer, so the
routing stays readable and every fault is reproducible (seeded RNG, explicit page faults).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from nv_datalad.emulator.replies import Reply, html_reply, positive_int


@dataclass(frozen=True)
class Faults:
    """Failure injection. Each rate is a probability per request, drawn from a seeded RNG."""

    error_rate: float = 0.0
    truncate_rate: float = 0.0
    stall_rate: float = 0.0
    stall_seconds: float = 30.0
    malformed_json_rate: float = 0.0
    paths: tuple[str, ...] | None = None  # path prefixes the faults apply to; None: all
    #: 200 with an empty body (``Content-Length: 0``): a file store that lost the file
    empty_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("error_rate", "truncate_rate", "stall_rate", "malformed_json_rate",
                     "empty_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value!r}")
        if self.stall_seconds < 0:
            raise ValueError(f"stall_seconds must be >= 0, got {self.stall_seconds!r}")

    def applies_to(self, path: str) -> bool:
        return self.paths is None or any(path.startswith(p) for p in self.paths)


@dataclass(frozen=True)
class Network:
    """Simulated network: ``latency`` seconds before each reply, ``bandwidth`` bytes/s per body."""

    latency: float = 0.0
    bandwidth: float | None = None

    def __post_init__(self) -> None:
        if self.latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {self.latency!r}")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError(f"bandwidth must be > 0 bytes/s or None, got {self.bandwidth!r}")


@dataclass(frozen=True)
class FaultDecision:
    stall: bool = False
    error_status: int | None = None
    malformed: bool = False
    truncate: bool = False
    empty: bool = False


def decide_faults(faults: Faults, rng: random.Random, path: str, reply: Reply) -> FaultDecision:
    """What happens to this reply; draws from ``rng`` in a fixed order so that the same settings
    and request sequence fail the same requests."""
    if not faults.applies_to(path):
        return FaultDecision()
    stall = rng.random() < faults.stall_rate
    if rng.random() < faults.error_rate:
        return FaultDecision(stall=stall, error_status=rng.choice((500, 502, 503)))
    malformed = reply.is_json and reply.status == 200 and rng.random() < faults.malformed_json_rate
    truncate = not malformed and rng.random() < faults.truncate_rate
    # drawn only when asked for, so the other faults' sequences stay as they were
    empty = (faults.empty_rate > 0 and not (malformed or truncate) and reply.status == 200
             and rng.random() < faults.empty_rate)
    return FaultDecision(stall=stall, malformed=malformed, truncate=truncate, empty=empty)


MAINTENANCE_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>NeuroVault</title></head><body>"
    "<h1>NeuroVault is down for maintenance</h1><p>Please try again later.</p></body></html>\n"
)


@dataclass
class PageFault:
    """One listing page that answers badly while the rest of the list is fine.

    ``path`` is the list (``/api/collections/35/images/``), ``offset`` picks the page (the
    ``offset`` query parameter the client sends; 0 for the first page). Kinds:

    ``html-page``
        status 200 with an HTML maintenance page where JSON is expected (a proxy in front of a
        sick server does this);
    ``truncated-json``
        status 200, ``application/json``, the body cut in half with a matching Content-Length,
        so only the JSON parser notices.

    ``times``: how many requests of that page it spoils (None: every one, so retries fail too).
    """

    path: str
    kind: str
    offset: int = 0
    times: int | None = None

    KINDS = ("html-page", "truncated-json")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(
                f"unknown page fault {self.kind!r}: expected one of {', '.join(self.KINDS)}"
            )
        if not (self.path.startswith("/api/") and self.path.endswith("/")):
            raise ValueError(f"path must be an API list such as /api/images/, got {self.path!r}")
        if self.offset < 0 or (self.times is not None and self.times < 1):
            raise ValueError("offset must be >= 0 and times >= 1 (or None: always)")

    def spoil(self, path: str, query: dict[str, str], reply: Reply) -> Reply:
        """``reply`` spoilt if it is this page's healthy JSON answer; else ``reply`` itself."""
        offset = positive_int(query.get("offset"), strict=False) or 0
        if path != self.path or offset != self.offset or self.times == 0:
            return reply
        if not (reply.is_json and reply.status == 200):
            return reply
        if self.times is not None:
            self.times -= 1
        if self.kind == "html-page":
            return html_reply(200, MAINTENANCE_PAGE, reply.kind)
        return Reply(200, reply.body[: len(reply.body) // 2], kind=reply.kind)
