"""Which Neurosynth lookups failed lately, so a rebuild does not ask again every time.

The decoder fails for some images for days (HTML error pages, 5xx, empty answers). Asking
again in every build cost every build, no-op rebuilds included, the time of those requests.
Each failed image is remembered with a back-off instead:

- after the n-th failed attempt in a row, the image is not asked again for
  ``1 h × 2^(n-1)``, capped at 7 days (1 h, 2 h, 4 h, ... 128 h, then 7 days);
- an image whose lookup succeeds is forgotten;
- ``retry_all`` (``build --recheck``) asks for every image without words, whatever its back-off.

The memory is local cache state of one clone (``.git/nv-datalad/neurosynth-misses.json``, never
committed): it says when this machine last asked, not anything about the data. Outside a git
repository nothing is remembered and every image is asked for. A missing or unreadable file
means "nothing failed lately": the worst case is one extra request per image.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nv_datalad.dataset.files import write_atomic

lgr = logging.getLogger(__name__)

STATE_FILE = Path(".git") / "nv-datalad" / "neurosynth-misses.json"
FIRST_BACKOFF = timedelta(hours=1)
MAX_BACKOFF = timedelta(days=7)


def backoff(attempts: int) -> timedelta:
    """How long to wait after ``attempts`` failed lookups in a row."""
    if attempts <= 0:
        return timedelta(0)
    return min(FIRST_BACKOFF * 2 ** min(attempts - 1, 16), MAX_BACKOFF)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Miss:
    """The failed lookups of one image: since when, the last one, how many in a row."""

    first_failed: str
    last_tried: str
    attempts: int

    def next_try(self) -> datetime:
        return datetime.fromisoformat(self.last_tried) + backoff(self.attempts)


class MissLog:
    """The remembered misses of one dataset; loaded once per build step, saved once after."""

    def __init__(self, path: Path | None, misses: dict[int, Miss] | None = None):
        self.path = path
        self.misses: dict[int, Miss] = dict(misses or {})

    @classmethod
    def load(cls, dataset: Path) -> MissLog:
        """The dataset's memory; an empty one that is never saved outside a git repository."""
        if not (Path(dataset) / ".git").is_dir():
            return cls(None)
        path = Path(dataset) / STATE_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            misses = {int(iid): Miss(**entry) for iid, entry in raw.items()}
            for miss in misses.values():
                miss.next_try()  # a date we cannot read means the file is unusable
        except FileNotFoundError:
            misses = {}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            lgr.info("ignoring unreadable %s (%s): every image will be asked for", path, exc)
            misses = {}
        return cls(path, misses)

    def due(self, image_id: int, now: datetime) -> bool:
        """Should this image be asked for now?"""
        miss = self.misses.get(int(image_id))
        return miss is None or miss.next_try() <= now

    def next_try(self, image_id: int) -> str | None:
        miss = self.misses.get(int(image_id))
        return _iso(miss.next_try()) if miss is not None else None

    def record(self, failed: Iterable[int], succeeded: Iterable[int], now: datetime) -> None:
        """Count one more failed attempt for ``failed``; forget ``succeeded``."""
        for iid in succeeded:
            self.misses.pop(int(iid), None)
        for iid in failed:
            old = self.misses.get(int(iid))
            self.misses[int(iid)] = Miss(
                first_failed=old.first_failed if old else _iso(now),
                last_tried=_iso(now),
                attempts=(old.attempts if old else 0) + 1,
            )

    def save(self) -> None:
        """Write the memory (sorted, so an unchanged memory gives the same bytes)."""
        if self.path is None:
            return
        data = {str(iid): asdict(m) for iid, m in sorted(self.misses.items())}
        try:
            write_atomic(self.path, (json.dumps(data, indent=1) + "\n").encode("utf-8"))
        except OSError as exc:
            lgr.info("cannot remember Neurosynth misses in %s: %s", self.path, exc)
