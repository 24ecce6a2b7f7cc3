"""Event time: the `occurred_at` values memories carry and the time expressions of a question.

Pure functions over UTC (a date without a zone is taken as UTC). `parse_event_time` checks a
client's `occurred_at`; `parse_time_query` reads the explicit time expressions of a search
query ("yesterday", "last May", "in 2023", "on 8 May 2023", "before June 2023", "3 weeks
ago") into a `TimeRange` that ranking prefers softly (`memory.scoring.time_boost`), notes a
question that asks *when* something happened, and finds the event a question is anchored
to ("before the trip"), which the memory service resolves by searching for that event.

Relative expressions are resolved against the `now` given (the time of the search). A month
named without a year ("in June") is that month of any year: the parser cannot know which
June is meant, and the preference it gives is soft. Nothing here was fitted to a benchmark:
the expressions are the common English ones, the windows are calendar units.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

DAY_S = 86_400.0

# `occurred_at` must lie in [1900-01-01, 2100-01-01): old enough for a grandparent's story,
# and a value in milliseconds (or any absurd number) is refused instead of stored.
MIN_EVENT_TIME = datetime(1900, 1, 1, tzinfo=UTC).timestamp()
MAX_EVENT_TIME = datetime(2100, 1, 1, tzinfo=UTC).timestamp()

EVENT_TIME_HELP = "an ISO 8601 date or date-time (e.g. 2023-05-08T13:56:00Z) or Unix seconds"


def parse_event_time(value: object) -> float:
    """Unix seconds of an `occurred_at` value: a JSON number (Unix seconds) or an ISO 8601
    string; ValueError, saying what is expected, for anything else or out of bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"must be {EVENT_TIME_HELP}")
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not {EVENT_TIME_HELP}") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp()
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or not MIN_EVENT_TIME <= seconds < MAX_EVENT_TIME:
        raise ValueError("must lie between 1900-01-01 and 2100-01-01 (Unix seconds, not milliseconds)")
    return seconds


def format_day(seconds: float) -> str:
    """'Monday 8 May 2023': the date a person would remember an event by."""
    day = datetime.fromtimestamp(seconds, UTC)
    return f"{day:%A} {day.day} {day:%B %Y}"


# ---------------------------------------------------------------------------- ranges


@dataclass(frozen=True)
class TimeRange:
    """Times in [start, end) (either side open when None), optionally only in one month of
    the year (a month named without its year)."""

    start: float | None = None
    end: float | None = None
    month: int | None = None

    def contains(self, seconds: float) -> bool:
        if self.start is not None and seconds < self.start:
            return False
        if self.end is not None and seconds >= self.end:
            return False
        return self.month is None or datetime.fromtimestamp(seconds, UTC).month == self.month


Direction = Literal["before", "after"]


@dataclass(frozen=True)
class TimeQuery:
    """What a query says about time. `range`: explicit times it names; `anchor`: an event it
    is placed before or after ("before the trip"), to be found among the memories;
    `asks_when`: it asks for a time ("when did ...")."""

    range: TimeRange | None = None
    anchor: tuple[Direction, str] | None = None
    asks_when: bool = False


MONTHS = {
    name: i + 1
    for i, names in enumerate([
        ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",), ("june", "jun"),
        ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"), ("october", "oct"),
        ("november", "nov"), ("december", "dec"),
    ])
    for name in names
}
WEEKDAYS = {name: i for i, name in enumerate(
    ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"])}
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
           "eight": 8, "nine": 9, "ten": 10, "a couple of": 2, "a few": 3, "several": 3}

_MONTH = r"(?P<month>" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
_COUNT = r"(?P<count>\d+|" + "|".join(sorted(NUMBERS, key=len, reverse=True)) + r")"
_UNIT = r"(?P<unit>day|week|month|year)s?"
# Words that make a bare month name or year a time ("in May", not "you may"; "in 2023", not
# "2023 steps"); `before`/`after`/... also turn the date into an open range.
_LEAD = r"(?P<lead>in|during|of|on|since|before|after|until|till|by|from|throughout|early|late|mid|last|this|next)"

_DATE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("day", re.compile(r"\b(?P<year>(?:19|20)\d\d)-(?P<mon>[01]?\d)-(?P<day>[0-3]?\d)\b")),
    ("day", re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b")),
    ("day", re.compile(rf"\b{_MONTH}\s+{_DAY},?\s+{_YEAR}\b")),
    ("month", re.compile(rf"\b{_MONTH},?\s+(?:of\s+)?{_YEAR}\b")),
    ("year", re.compile(rf"\b{_LEAD}\s+(?:the\s+year\s+)?{_YEAR}\b")),
    ("relative", re.compile(r"\b(?P<word>yesterday|today|tonight|this morning|this afternoon|this evening|"
                            r"recently|lately)\b")),
    ("ago", re.compile(rf"\b{_COUNT}\s+{_UNIT}\s+ago\b")),
    ("span", re.compile(rf"\b(?:in\s+)?(?:the\s+)?(?:past|last)\s+{_COUNT}\s+{_UNIT}\b")),
    ("unit", re.compile(r"\b(?P<which>last|previous|this|past)\s+(?P<unit>week|month|year|weekend)\b")),
    ("weekday", re.compile(r"\b(?P<which>last|this|past)\s+(?P<weekday>" + "|".join(WEEKDAYS) + r")\b")),
    ("month_of_year", re.compile(rf"\b{_LEAD}\s+(?:the\s+)?{_MONTH}(?!\s*[0-3]?\d)\b")),
    ("month_of_year", re.compile(rf"\b{_MONTH}\s+{_DAY}\b(?!,?\s*(?:19|20)\d\d)")),
]

_DIRECTIONS = ("before", "prior to", "until", "till", "by", "after", "since")
_OPENERS = re.compile(r"\b(?P<dir>" + "|".join(_DIRECTIONS) + r")\s+(?:the\s+)?$")
_WHEN = re.compile(r"\b(when|what (?:time|date|day|year|month)|which (?:day|year|month|date)|how long ago)\b")
# An event a question is placed against: a noun phrase with a determiner ("after the trip",
# "before her wedding") or a gerund clause ("before meeting Maria"); not "after work".
_ANCHOR = re.compile(r"\b(?P<dir>before|after)\s+(?P<what>(?:(?:the|a|an|his|her|their|my|our|your|its)\s|"
                     r"[a-z]+ing\b)[^?.!,;]{2,80})")


def _utc(year: int, month: int = 1, day: int = 1) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def _month_range(year: int, month: int) -> TimeRange:
    end = _utc(year + 1, 1) if month == 12 else _utc(year, month + 1)
    return TimeRange(_utc(year, month).timestamp(), end.timestamp())


def _day_range(day: datetime) -> TimeRange:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    return TimeRange(start, start + DAY_S)


def _count(word: str) -> int:
    return int(word) if word.isdigit() else NUMBERS[word]


def _unit_days(unit: str) -> float:
    return {"day": 1.0, "week": 7.0, "month": 30.44, "year": 365.25}[unit]


def _range_of(kind: str, m: re.Match[str], now: datetime) -> TimeRange | None:
    """The range one matched date expression names (None if it names no real date)."""
    g = m.groupdict()
    try:
        if kind == "day":
            month = int(g["mon"]) if g.get("mon") else MONTHS[g["month"]]
            return _day_range(_utc(int(g["year"]), month, int(g["day"])))
        if kind == "month":
            return _month_range(int(g["year"]), MONTHS[g["month"]])
        if kind == "year":
            return TimeRange(_utc(int(g["year"])).timestamp(), _utc(int(g["year"]) + 1).timestamp())
    except ValueError:  # 31 February
        return None
    if kind == "month_of_year":
        if g.get("lead") in ("last", "this", "next"):
            return _named_month(g["lead"], MONTHS[g["month"]], now)
        return TimeRange(month=MONTHS[g["month"]])
    return _relative(kind, g, now)


def _named_month(which: str, month: int, now: datetime) -> TimeRange:
    """'last May' is the latest May before this month; 'this May' this year's; 'next May' the first after."""
    year = now.year
    if which == "last":
        year -= 1 if month >= now.month else 0
    elif which == "next":
        year += 1 if month <= now.month else 0
    return _month_range(year, month)


def _relative(kind: str, g: dict[str, str], now: datetime) -> TimeRange | None:
    today = _day_range(now)
    assert today.start is not None
    t = now.timestamp()
    if kind == "relative":
        word = g["word"]
        if word == "yesterday":
            return TimeRange(today.start - DAY_S, today.start)
        if word in ("recently", "lately"):
            return TimeRange(t - 30 * DAY_S, None)
        return today
    if kind == "ago":
        days = _count(g["count"]) * _unit_days(g["unit"])
        if g["unit"] == "day":
            return TimeRange(today.start - days * DAY_S, today.start - (days - 1) * DAY_S)
        half = _unit_days(g["unit"]) / 2  # "3 weeks ago": the week around that point
        return TimeRange(t - (days + half) * DAY_S, t - (days - half) * DAY_S)
    if kind == "span":
        return TimeRange(t - _count(g["count"]) * _unit_days(g["unit"]) * DAY_S, None)
    if kind == "unit":
        return _calendar_unit(g["which"], g["unit"], now)
    if kind == "weekday":
        back = (now.weekday() - WEEKDAYS[g["weekday"]]) % 7
        if g["which"] in ("last", "past") and back == 0:
            back = 7
        return _day_range(now - timedelta(days=back))
    return None


def _calendar_unit(which: str, unit: str, now: datetime) -> TimeRange:
    """'last week' is the calendar week before this one (Monday to Sunday), 'this month' this one."""
    previous = which in ("last", "previous", "past")
    if unit in ("week", "weekend"):
        monday = _day_range(now - timedelta(days=now.weekday())).start
        assert monday is not None
        start = monday - (7 * DAY_S if previous else 0.0)
        if unit == "weekend":
            return TimeRange(start + 5 * DAY_S, start + 7 * DAY_S)
        return TimeRange(start, start + 7 * DAY_S)
    if unit == "month":
        year, month = (now.year, now.month - 1) if previous else (now.year, now.month)
        if month == 0:
            year, month = year - 1, 12
        return _month_range(year, month)
    year = now.year - 1 if previous else now.year
    return TimeRange(_utc(year).timestamp(), _utc(year + 1).timestamp())


def _opened(r: TimeRange, direction: str) -> TimeRange:
    """'before May 2023' -> everything before May 2023; 'since ...' includes it; 'by ...' up to its end."""
    if r.month is not None and r.start is None:
        return r  # "before June" without a year names no point in time: keep the month itself
    if direction in ("before", "prior to"):
        return TimeRange(None, r.start)
    if direction in ("until", "till", "by"):
        return TimeRange(None, r.end)
    if direction == "after":
        return TimeRange(r.end, None)
    return TimeRange(r.start, None)  # since


def _intersect(a: TimeRange, b: TimeRange) -> TimeRange:
    starts = [s for s in (a.start, b.start) if s is not None]
    ends = [e for e in (a.end, b.end) if e is not None]
    return TimeRange(max(starts) if starts else None, min(ends) if ends else None, a.month or b.month)


def parse_time_query(query: str, now: float) -> TimeQuery:
    """The time a query is about. Several expressions narrow each other ("last week before
    Friday"): their ranges are intersected; an empty intersection keeps the first one."""
    text = " ".join(query.lower().split())
    current = datetime.fromtimestamp(now, UTC)
    found: TimeRange | None = None
    taken: list[tuple[int, int]] = []
    for kind, pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            if any(s < m.end() and m.start() < e for s, e in taken):
                continue  # part of a longer expression already read ("8 May 2023" is not also "in May")
            r = _range_of(kind, m, current)
            if r is None:
                continue
            taken.append(m.span())
            opener = _OPENERS.search(text[: m.start()])
            direction = opener.group("dir") if opener is not None else m.groupdict().get("lead")
            if direction in _DIRECTIONS:
                r = _opened(r, direction)
            both = r if found is None else _intersect(found, r)
            if found is None or both.start is None or both.end is None or both.start < both.end:
                found = both
    anchor = None
    for m in _ANCHOR.finditer(text):
        if not any(s <= m.start("what") < e for s, e in taken):
            side: Direction = "before" if m.group("dir") == "before" else "after"
            anchor = (side, m.group("what").strip())
            break
    return TimeQuery(range=found, anchor=anchor if found is None else None, asks_when=bool(_WHEN.search(text)))


def anchored_range(direction: Direction, event_time: float) -> TimeRange:
    """'before the trip' once the trip is found: up to the end of its day ('after': from its
    start), so what was said about the trip on that day still counts."""
    day = _day_range(datetime.fromtimestamp(event_time, UTC))
    return TimeRange(None, day.end) if direction == "before" else TimeRange(day.start, None)
