"""The clock of stored records: ISO 8601 UTC text, and the calendar month it falls in.

Jobs, tokens and usage rows carry `utcnow()` text (both stores keep the same
text, so records compare alike); a token's monthly quota is counted per
`month_of` that text.
"""

from __future__ import annotations

import datetime as dt
import math
import time

_second: tuple[int, str] = (-1, "")     # the last second formatted, and its text


def utcnow() -> str:
    """Now as ISO 8601 UTC with milliseconds, e.g. 2026-11-26T06:55:00.123Z.

    A request takes several; the date and time are formatted once a second.
    """
    global _second
    now = time.time()
    second, text = _second
    if int(now) != second:
        second = int(now)
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, text)        # one assignment: safe from any thread
    return f"{text}.{int((now - second) * 1000):03d}Z"


def month_of(timestamp: str) -> str:
    """The "YYYY-MM" of an ISO 8601 UTC timestamp."""
    return timestamp[:7]


def seconds_to_next_month(now: dt.datetime | None = None) -> int:
    """Whole seconds (at least 1) from `now` (default: the current time, UTC) to the
    first instant of the next calendar month, UTC."""
    now = now or dt.datetime.now(dt.timezone.utc)
    first = (now.replace(day=28) + dt.timedelta(days=4)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((first - now).total_seconds()))
