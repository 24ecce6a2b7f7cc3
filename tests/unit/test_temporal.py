"""Event times and the time expressions of questions (`core.temporal`), the index text of a
conversation turn (`core.conversation`) and recency decay by event time (`core.scoring`)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from serve_app.core.conversation import index_text
from serve_app.core.scoring import ScoringSettings, memory_score, recency_decay
from serve_app.core.store import MemoryRecord
from serve_app.core.temporal import TimeRange, anchored_range, format_day, parse_event_time, parse_time_query

NOW = datetime(2025, 6, 18, 12, tzinfo=UTC).timestamp()  # a Wednesday


def day(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize("value, expected", [
    ("2023-05-08T13:56:00Z", 1683554160.0),
    ("2023-05-08T15:56:00+02:00", 1683554160.0),
    ("2023-05-08T13:56:00", 1683554160.0),  # no zone: UTC
    ("2023-05-08", 1683504000.0),
    (1683554160, 1683554160.0),
    (1683554160.5, 1683554160.5),
])
def test_event_times_are_iso_8601_or_unix_seconds(value: object, expected: float) -> None:
    assert parse_event_time(value) == expected


@pytest.mark.parametrize("value", ["yesterday", "8 May 2023", "", True, None, [2023], float("nan"), float("inf"),
                                   1.7e12, -1e10, "1899-12-31", "2100-01-01", "9999-12-31T23:59:59"])
def test_bad_or_absurd_event_times_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        parse_event_time(value)


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def span(query: str) -> tuple[str | None, str | None, int | None] | None:
    r = parse_time_query(query, NOW).range
    return None if r is None else (iso(r.start), iso(r.end), r.month)


@pytest.mark.parametrize("query, expected", [
    ("What did I do yesterday?", ("2025-06-17", "2025-06-18", None)),
    ("anything today", ("2025-06-18", "2025-06-19", None)),
    ("Where did we go last May?", ("2025-05-01", "2025-06-01", None)),
    ("plans for last July", ("2024-07-01", "2024-08-01", None)),
    ("what happened last week", ("2025-06-09", "2025-06-16", None)),
    ("last month", ("2025-05-01", "2025-06-01", None)),
    ("trips last year", ("2024-01-01", "2025-01-01", None)),
    ("last Monday", ("2025-06-16", "2025-06-17", None)),
    ("3 days ago", ("2025-06-15", "2025-06-16", None)),
    ("a few weeks ago", ("2025-05-25", "2025-06-01", None)),
    ("in the past two days", ("2025-06-16", None, None)),
    ("How often did she go to the beach in 2023?", ("2023-01-01", "2024-01-01", None)),
    ("What setback did she face in October 2023?", ("2023-10-01", "2023-11-01", None)),
    ("What did she show on October 13, 2023?", ("2023-10-13", "2023-10-14", None)),
    ("What did Gina find on 1 February, 2023?", ("2023-02-01", "2023-02-02", None)),
    ("notes from 2023-05-08", ("2023-05-08", "2023-05-09", None)),
    ("before 2020", (None, "2020-01-01", None)),
    ("since May 2023", ("2023-05-01", None, None)),
    ("after May 2023", ("2023-06-01", None, None)),
    ("by May 2023", (None, "2023-06-01", None)),
    ("the week before August 3, 2023", (None, "2023-08-03", None)),
    ("last weekend before April 10, 2023", (None, "2023-04-10", None)),  # "last weekend" (2025) cannot also hold
    ("When did she go camping in June?", (None, None, 6)),  # a month of any year
    ("You may want to rest", None),  # "may" is a verb here
    ("she walked 2023 steps", None),  # a bare number is not a year
    ("When did Caroline go to the support group?", None),
])
def test_time_expressions_become_ranges(query: str, expected: tuple[str | None, str | None, int | None] | None) -> None:
    assert span(query) == expected


def test_when_questions_and_anchored_events() -> None:
    assert parse_time_query("When did Caroline go to the support group?", NOW).asks_when
    assert not parse_time_query("What did Caroline research?", NOW).asks_when
    assert parse_time_query("What did Melanie realize after the charity race?", NOW).anchor == (
        "after", "the charity race")
    assert parse_time_query("What did Jean go through before meeting Maria?", NOW).anchor == (
        "before", "meeting maria")
    assert parse_time_query("What do I do after work?", NOW).anchor is None  # no event named
    assert parse_time_query("before May 2023", NOW).anchor is None  # a date, not an event
    trip = day("2023-07-14T18:00:00")
    assert anchored_range("before", trip) == TimeRange(None, day("2023-07-15"))
    assert anchored_range("after", trip) == TimeRange(day("2023-07-14"), None)


def test_time_range_contains() -> None:
    may = TimeRange(day("2023-05-01"), day("2023-06-01"))
    assert may.contains(day("2023-05-01")) and may.contains(day("2023-05-31T23:59:59"))
    assert not may.contains(day("2023-06-01")) and not may.contains(day("2023-04-30"))
    june = TimeRange(month=6)
    assert june.contains(day("2019-06-10")) and not june.contains(day("2019-07-10"))


def test_index_text_adds_the_day_and_the_turn_replied_to() -> None:
    text = "Melanie: Yes, last Tuesday!"
    indexed = index_text(text, day("2023-05-08T13:56:00"), "Caroline: Did you finally go to the beach?")
    assert indexed == ("[Monday 8 May 2023] Melanie: Yes, last Tuesday! "
                       "(in reply to Caroline: Did you finally go to the beach?)")
    assert index_text(text, None, None) == text
    assert index_text(text, day("2023-05-08"), None) == f"[{format_day(day('2023-05-08'))}] {text}"
    long = index_text("B: ok", None, "A: " + "word " * 200)
    assert len(long) < 330 and long.endswith("…)")


def record(created: float, occurred: float | None, tier: str = "episodic") -> MemoryRecord:
    return MemoryRecord(key=1, id="m", user="u", text="t", tier=tier, importance=0.5, metadata={}, created_at=created,
                        updated_at=created, expires_at=None, access_count=0, last_accessed=None, occurred_at=occurred)


def test_recency_decay_counts_days_since_the_event_occurred() -> None:
    s = ScoringSettings()
    written_now = record(created=NOW, occurred=NOW - 10 * 86400)
    assert math.isclose(recency_decay(written_now, NOW, s, decays=True), math.exp(-0.05 * 10))
    assert recency_decay(written_now, NOW, s, decays=False) == 1.0
    assert recency_decay(record(NOW - 10 * 86400, None), NOW, s, True) == pytest.approx(math.exp(-0.5))
    assert recency_decay(record(NOW, NOW + 86400), NOW, s, True) == 1.0  # a planned event has not faded
    fresh, old = record(NOW, NOW), record(NOW, NOW - 30 * 86400)
    assert memory_score(1.0, fresh, NOW, s, True) > memory_score(1.0, old, NOW, s, True)
    assert memory_score(1.0, old, NOW, s, True, in_time=True) == pytest.approx(
        2 * memory_score(1.0, old, NOW, s, True))
