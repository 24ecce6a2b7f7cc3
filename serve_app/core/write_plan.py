"""Planning one batch of memory writes: which item adds a memory, which merges into one,
which changes nothing. Pure (no store, no Ray); `MemoryService.add` runs the plan.

A batch behaves as if its items were written one after another: each item is judged
(`sameness.judge`) against the memories the batch has already drafted (new ones, and
existing ones it touched, with their current text) and against the user's existing
memories near it, most similar first. The first candidate that states the same fact
takes the item (NOOP or MERGE); if none does, the item drafts a new memory (ADD).
Judging several candidates instead of the single nearest matters: the nearest memory
may be "... on Monday" while the second nearest is the very sentence being repeated.

An item that repeats a memory word for word but raises its importance or brings new
metadata changes the stored memory, so it is reported as a MERGE (reason "identical"),
not a NOOP: NOOP always means the store was left as it was.

An item that says when it happened (`occurred_at`) is another event than a memory of
another day, however alike their words ("I went to the gym" on Monday and on Friday): it
is kept apart with reason "time", as a differing weekday in the text would keep it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serve_app.core.retrieval import NearMemory
from serve_app.core.sameness import Event, Reason, judge
from serve_app.core.store import MemoryRecord
from serve_app.core.temporal import DAY_S

_MISSING = object()


@dataclass(frozen=True)
class Incoming:
    """One item to write, its tier already resolved. `vector` embeds `index_text` when it
    has one (a conversation turn, `core.conversation`), else `text`. `occurred_at` only when
    the client said when it happened; `related`: keys of existing memories to connect it to."""

    text: str
    tier: str
    importance: float
    vector: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    occurred_at: float | None = None
    session: str | None = None
    index_text: str | None = None
    related: tuple[int, ...] = ()


@dataclass
class Draft:
    """What one memory will be after the batch: a new memory (`target` None) or an
    existing one the batch touched. `vector` embeds `text` (or, for an untouched text,
    a text equal to it once normalised), so a vanished target can be re-added as is."""

    text: str
    tier: str
    importance: float
    vector: np.ndarray
    metadata: dict[str, Any]
    target: MemoryRecord | None = None
    changed: bool = False  # the existing memory needs a write
    reembed: bool = False  # ... and its text (with the embedding) is replaced
    occurred_at: float | None = None
    session: str | None = None
    index_text: str | None = None
    related: tuple[int, ...] = ()


@dataclass(frozen=True)
class Step:
    """What one item did: its draft (index into `WritePlan.drafts`), event and why."""

    draft: int
    event: Event
    reason: Reason


@dataclass
class WritePlan:
    drafts: list[Draft] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    by_target: dict[str, int] = field(default_factory=dict)  # existing memory id -> draft


@dataclass(frozen=True)
class WriteOutcome:
    """What happened to one item of a write, as the API reports it (mem0 style)."""

    id: str  # the memory that now holds the item's fact
    event: Event
    reason: Reason
    merged_into: str | None = None  # set for MERGE: the memory it was merged into (== id)


@dataclass(frozen=True)
class _Candidate:
    similarity: float
    text: str
    draft: int | None  # a memory this batch already drafted ...
    record: MemoryRecord | None  # ... or an existing one it has not touched yet
    occurred_at: float | None  # its event time, when known


def _other_day(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and a // DAY_S != b // DAY_S


def plan_writes(
    items: Sequence[Incoming], near: Sequence[Sequence[NearMemory]], threshold: float, dedup: bool = True
) -> WritePlan:
    """Decide every item of a batch; `near[i]` are the existing memories near item i."""
    plan = WritePlan()
    for item, candidates in zip(items, near, strict=True):
        plan.steps.append(_place(plan, item, _candidates(plan, item, candidates, threshold)) if dedup
                          else _draft_new(plan, item, "new"))
    return plan


def _candidates(plan: WritePlan, item: Incoming, near: Sequence[NearMemory], threshold: float) -> list[_Candidate]:
    """Drafts within `threshold` of the item, then existing memories not drafted yet,
    most similar first (a drafted memory is judged by its current text)."""
    found = [
        _Candidate(similarity, draft.text, i, None,
                   draft.target.event_time if draft.target is not None else draft.occurred_at)
        for i, draft in enumerate(plan.drafts)
        if (similarity := float(np.dot(item.vector, draft.vector))) >= threshold
    ]
    found += [_Candidate(m.similarity, m.record.text, None, m.record, m.record.event_time)
              for m in near if m.record.id not in plan.by_target and m.similarity >= threshold]
    return sorted(found, key=lambda c: c.similarity, reverse=True)


def _place(plan: WritePlan, item: Incoming, candidates: list[_Candidate]) -> Step:
    reason: Reason = "new"
    for candidate in candidates:
        if _other_day(item.occurred_at, candidate.occurred_at):  # the same words about another day's event
            reason = "time" if reason == "new" else reason
            continue
        verdict = judge(item.text, candidate.text, candidate.similarity, 0.0)  # candidates are all close
        if verdict.event == "ADD":
            reason = verdict.reason if reason == "new" else reason  # why the closest one differs
            continue
        index = candidate.draft if candidate.draft is not None else _touch(plan, candidate.record, item)
        return Step(index, _absorb(plan.drafts[index], item, verdict.event), verdict.reason)
    return _draft_new(plan, item, reason)


def _draft_new(plan: WritePlan, item: Incoming, reason: Reason) -> Step:
    plan.drafts.append(Draft(item.text, item.tier, item.importance, item.vector, dict(item.metadata),
                             occurred_at=item.occurred_at, session=item.session, index_text=item.index_text,
                             related=item.related))
    return Step(len(plan.drafts) - 1, "ADD", reason)


def _touch(plan: WritePlan, record: MemoryRecord | None, item: Incoming) -> int:
    """Draft an existing memory as it is stored (the item's vector, with the index text it
    embeds, stands in for its embedding: the item is the same text or replaces it; should the
    memory vanish before the commit, the item's fact is added with them)."""
    assert record is not None  # a candidate is either drafted or an existing record
    plan.drafts.append(Draft(record.text, record.tier, record.importance, item.vector, dict(record.metadata), record,
                             occurred_at=item.occurred_at, session=item.session, index_text=item.index_text))
    plan.by_target[record.id] = len(plan.drafts) - 1
    return len(plan.drafts) - 1


def _absorb(draft: Draft, item: Incoming, event: Event) -> Event:
    """Fold an item into the memory it restates: importance only rises, metadata keys
    are added or overwritten, a MERGE's newer wording replaces the text."""
    grows = item.importance > draft.importance or any(
        draft.metadata.get(key, _MISSING) != value for key, value in item.metadata.items())
    if event == "NOOP" and not grows:
        return "NOOP"
    draft.importance = max(draft.importance, item.importance)
    draft.metadata = {**draft.metadata, **item.metadata}
    if event == "MERGE":
        draft.text, draft.vector, draft.index_text, draft.reembed = item.text, item.vector, item.index_text, True
    draft.changed = True
    return "MERGE"


def outcomes(plan: WritePlan, ids: Sequence[str], gone: set[int]) -> list[WriteOutcome]:
    """Each item's outcome once the plan ran: `ids[d]` is draft d's memory id, `gone`
    the drafts whose existing memory was deleted meanwhile and was therefore added anew.
    The first item on such a draft reports ADD ("target_gone"), never a dead id."""
    reported: set[int] = set()
    result = []
    for step in plan.steps:
        memory_id = ids[step.draft]
        first = step.draft not in reported
        reported.add(step.draft)
        if step.draft in gone and first:
            result.append(WriteOutcome(memory_id, "ADD", "target_gone"))
        elif step.event == "MERGE":
            result.append(WriteOutcome(memory_id, "MERGE", step.reason, memory_id))
        else:
            result.append(WriteOutcome(memory_id, step.event, step.reason))
    return result
