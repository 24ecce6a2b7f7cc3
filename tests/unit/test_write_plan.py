"""Planning a batch of writes against existing memories and against itself (pure)."""

from __future__ import annotations

from typing import Any

from serve_app.core.retrieval import NearMemory
from serve_app.core.store import MemoryRecord
from serve_app.core.write_plan import Incoming, WriteOutcome, outcomes, plan_writes
from tests.fakes import bag_of_words

T = 0.95


def item(text: str, importance: float = 0.5, **metadata: Any) -> Incoming:
    return Incoming(text, "long_term", importance, bag_of_words(text), metadata)


def stored(memory_id: str, text: str, importance: float = 0.5, **metadata: Any) -> MemoryRecord:
    return MemoryRecord(key=hash(memory_id) % 1000, id=memory_id, user="u", text=text, tier="semantic",
                        importance=importance, metadata=metadata, created_at=1.0, updated_at=1.0, expires_at=None,
                        access_count=0, last_accessed=None)


def near(record: MemoryRecord, similarity: float = 0.99) -> NearMemory:
    return NearMemory(record, similarity)


def test_a_word_for_word_repeat_changes_nothing() -> None:
    old = stored("m1", "My dog is called Rex")
    plan = plan_writes([item("my dog is called rex!")], [[near(old)]], T)
    assert [(s.event, s.reason) for s in plan.steps] == [("NOOP", "identical")]
    assert plan.drafts[0].target is old and not plan.drafts[0].changed
    assert outcomes(plan, ["m1"], set()) == [WriteOutcome("m1", "NOOP", "identical")]


def test_a_repeat_that_raises_importance_or_adds_metadata_is_a_merge() -> None:
    old = stored("m1", "My dog is called Rex", importance=0.6, source="api")
    for new in (item("My dog is called Rex", importance=0.9), item("My dog is called Rex", 0.1, mood="happy")):
        plan = plan_writes([new], [[near(old)]], T)
        draft = plan.drafts[0]
        assert plan.steps[0].event == "MERGE" and plan.steps[0].reason == "identical"
        assert draft.changed and not draft.reembed and draft.text == old.text
        assert draft.importance == max(0.6, new.importance) and draft.metadata["source"] == "api"
    same_metadata = plan_writes([item("My dog is called Rex", 0.1, source="api")], [[near(old)]], T)
    assert same_metadata.steps[0].event == "NOOP"


def test_a_paraphrase_replaces_the_text_and_keeps_the_higher_importance() -> None:
    old = stored("m1", "My favourite colour is blue", importance=0.9, a=1)
    plan = plan_writes([item("Blue is my favourite colour", 0.2, b=2)], [[near(old)]], T)
    draft = plan.drafts[0]
    assert (plan.steps[0].event, plan.steps[0].reason) == ("MERGE", "paraphrase")
    assert draft.reembed and draft.text == "Blue is my favourite colour" and draft.tier == "semantic"
    assert draft.importance == 0.9 and draft.metadata == {"a": 1, "b": 2}
    assert outcomes(plan, ["m1"], set()) == [WriteOutcome("m1", "MERGE", "paraphrase", "m1")]


def test_a_different_fact_is_added_with_the_reason() -> None:
    monday = stored("m1", "I met Sarah at the gym on Monday.")
    plan = plan_writes([item("I met Sarah at the gym on Friday.")], [[near(monday, 0.999)]], T)
    assert [(s.event, s.reason) for s in plan.steps] == [("ADD", "time")]
    assert plan.drafts[0].target is None
    assert plan_writes([item("unrelated")], [[]], T).steps[0].reason == "new"


def test_a_repeat_behind_a_closer_different_memory_is_found() -> None:
    other, same = stored("m7", "record number 7"), stored("m5", "record number 5")
    plan = plan_writes([item("Record number 5.")], [[near(other, 1.0), near(same, 1.0)]], T)
    assert plan.steps[0].event == "NOOP" and plan.drafts[0].target is same


def test_below_the_threshold_nothing_is_judged() -> None:
    old = stored("m1", "My dog is called Rex")
    assert plan_writes([item("My dog is called Rex")], [[near(old, 0.9)]], T).steps[0].event == "ADD"


def test_a_batch_is_judged_as_if_written_in_order() -> None:
    old = stored("m1", "My favourite colour is blue")
    items = [item("Blue is my favourite colour"), item("blue is my favourite colour!"),
             item("record number 1"), item("record number 2"), item("Record number 1")]
    # Every item sees the stored memory as near; the second sees it through the batch's draft.
    plan = plan_writes(items, [[near(old)] for _ in items], T)
    assert [(s.draft, s.event, s.reason) for s in plan.steps] == [
        (0, "MERGE", "paraphrase"), (0, "NOOP", "identical"),
        (1, "ADD", "new"), (2, "ADD", "number"), (1, "NOOP", "identical")]
    assert plan.by_target == {"m1": 0}


def test_dedup_off_adds_everything() -> None:
    old = stored("m1", "likes jazz")
    plan = plan_writes([item("likes jazz"), item("likes jazz")], [[near(old)], [near(old)]], T, dedup=False)
    assert [(s.draft, s.event) for s in plan.steps] == [(0, "ADD"), (1, "ADD")]


def test_a_vanished_target_is_reported_as_added_under_its_new_id() -> None:
    old = stored("m1", "My favourite colour is blue")
    plan = plan_writes([item("Blue is my favourite colour"), item("Blue is my favourite colour")],
                       [[near(old)], [near(old)]], T)
    assert outcomes(plan, ["m9"], gone={0}) == [
        WriteOutcome("m9", "ADD", "target_gone"), WriteOutcome("m9", "NOOP", "identical")]
