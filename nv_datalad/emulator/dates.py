"""Dates as NeuroVault writes them, driven by a logical clock.

NeuroVault records carry two date styles: old records say ``2016-01-27T21:47:42.236081Z``,
newer ones carry a Europe/Berlin offset (``+01:00`` in winter, ``+02:00`` in summer) and lose
their microseconds when those are zero. Clients must parse them as aware datetimes; the emulator
serves both so that clients are tested against both.

The emulator never reads the wall clock: every mutation asks ``LogicalClock.tick`` for the next
instant, so the same sequence of operations always yields the same dates, and each new date is
later than every date already in the corpus.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum

_CET = timezone(timedelta(hours=1))
_CEST = timezone(timedelta(hours=2))


class DateStyle(StrEnum):
    """How a record spells its dates."""

    UTC_Z = "utc"  # old records: always microseconds, "Z" suffix
    BERLIN = "berlin"  # newer records: +01:00/+02:00, microseconds dropped when zero


def _last_sunday(year: int, month: int) -> datetime:
    """Midnight UTC of the last Sunday of ``month`` (March or October: both have 31 days)."""
    last = datetime(year, month, 31, tzinfo=UTC)
    return last - timedelta(days=(last.weekday() + 1) % 7)


def berlin_offset(instant: datetime) -> timezone:
    """Europe/Berlin's UTC offset at ``instant`` (EU rule: summer time from the last Sunday of
    March 01:00 UTC to the last Sunday of October 01:00 UTC). Computed here rather than through
    zoneinfo so the emulator does not depend on the host's tz database."""
    utc = instant.astimezone(UTC)
    start = _last_sunday(utc.year, 3) + timedelta(hours=1)
    end = _last_sunday(utc.year, 10) + timedelta(hours=1)
    return _CEST if start <= utc < end else _CET


def format_date(instant: datetime, style: DateStyle) -> str:
    """Spell an aware instant in one of NeuroVault's two date styles."""
    utc = instant.astimezone(UTC)
    if style is DateStyle.UTC_Z:
        return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    # isoformat() drops the fractional part when microseconds are zero, as the server does.
    return utc.astimezone(berlin_offset(utc)).isoformat()


class LogicalClock:
    """Monotonic, deterministic source of "now" for mutations.

    Starts at the corpus snapshot instant; each tick moves forward by a fixed step plus a few
    seconds that depend on the tick number, so consecutive dates look organic but replay exactly.
    Every 4th tick lands on a whole second, so the Berlin style's "no microseconds" form appears.
    """

    def __init__(self, start: datetime) -> None:
        self._now = start.astimezone(UTC)
        self._ticks = 0
        self._lock = threading.Lock()

    @property
    def now(self) -> datetime:
        return self._now

    def tick(self) -> datetime:
        with self._lock:
            self._ticks += 1
            n = self._ticks
            micro = 0 if n % 4 == 0 else (n * 7919 * 104729) % 1_000_000
            step = timedelta(hours=1, seconds=(n * 37) % 600)
            self._now = (self._now + step).replace(microsecond=micro)
            return self._now
