"""The sameness rule: close embeddings are necessary, never sufficient, to merge two texts."""

from __future__ import annotations

import pytest

from serve_app.core.sameness import facts, judge, normalize

CLOSE = 0.99  # every pair below is judged as if its embeddings were this close
THRESHOLD = 0.95


def verdict(new: str, old: str) -> tuple[str, str]:
    v = judge(new, old, CLOSE, THRESHOLD)
    return v.event, v.reason


@pytest.mark.parametrize(("new", "old", "kind"), [
    ("I met Sarah at the gym on Friday.", "I met Sarah at the gym on Monday.", "time"),
    ("We moved here in 2024", "We moved here in 2023", "number"),
    ("I don't like tea", "I like tea", "negation"),
    ("I like tea", "I do not like tea", "negation"),
    ("I never eat meat", "I eat meat", "negation"),
    ("He went without a coat", "He went with a coat", "negation"),
    ("Nobody called", "Somebody called", "negation"),
    ("Bob moved to Paris", "Alice moved to Paris", "name"),
    ("Alice moved to Berlin", "Alice moved to Paris", "name"),
    ("I had lunch with Tom", "I had lunch with Sam", "name"),
    ("my meeting is tomorrow", "my meeting is today", "time"),
    ("I saw her last week", "I saw her next week", "time"),
    ("I go to the gym every week", "I go to the gym every month", "time"),
    ("The exam is in June", "The exam is in July", "time"),
    ("The call is at 3pm", "The call is at 4pm", "number"),
    ("The call is at 3 p.m.", "The call is at 3 a.m.", "number"),
    ("I have two cats", "I have three cats", "number"),
    ("I finished first", "I finished second", "number"),
    ("She was born on 2001-05-04", "She was born on 2001-05-14", "number"),
    ("the rent is 1,200 a month", "the rent is 1,300 a month", "number"),
    ("I met Sarah", "I met Sarah on Monday", "time"),
    ("I met Sarah on Monday", "I met on Monday", "name"),
])
def test_a_different_fact_is_never_merged(new: str, old: str, kind: str) -> None:
    assert verdict(new, old) == ("ADD", kind)
    assert verdict(old, new) == ("ADD", kind)  # the rule is symmetric


def test_monday_and_friday_are_two_events() -> None:
    monday, friday = "I met Sarah at the gym on Monday.", "I met Sarah at the gym on Friday."
    assert facts(monday).times == ("monday",) and facts(friday).times == ("friday",)
    assert judge(friday, monday, 0.999, THRESHOLD).event == "ADD"


def test_numbered_records_are_all_different() -> None:
    texts = [f"record number {i}" for i in range(1, 171)]
    for i, text in enumerate(texts):
        for other in (texts[i - 1], texts[(i + 1) % len(texts)], texts[(i + 85) % len(texts)]):
            assert verdict(text, other) == ("ADD", "number")
        assert verdict(text, text) == ("NOOP", "identical")


@pytest.mark.parametrize(("new", "old"), [
    ("my dog is called rex!", "My dog is called Rex"),
    ("Likes jazz.", "likes jazz"),
    ("I  don\u2019t like tea", "i don't like TEA."),
    ("Record number 5", "record number 5"),
])
def test_the_same_text_is_a_noop(new: str, old: str) -> None:
    assert verdict(new, old) == ("NOOP", "identical")


@pytest.mark.parametrize(("new", "old"), [
    ("Blue is my favourite colour", "My favourite colour is blue"),
    ("My dog's name is Rex", "My dog is called Rex"),
    ("I have 2 cats", "I have two cats"),
    ("On Monday I met Sarah at the gym", "I met Sarah at the gym on Monday"),
    ("Last week I visited Rome", "I visited Rome last week"),
    ("The meeting is at 3 PM", "the meeting is at 3pm"),
    ("Sarah's birthday is on the 1st of May", "Sarah's birthday is on the first of May"),
    ("I really don't like tea", "I do not like tea"),
    ("Paris is where Alice lives", "Alice lives in Paris"),
    ("user: at noon I met sarah", "user: I met Sarah at noon"),
])
def test_a_reworded_fact_merges(new: str, old: str) -> None:
    assert verdict(new, old) == ("MERGE", "paraphrase")


def test_close_embeddings_are_necessary() -> None:
    assert judge("My dog is called Rex", "My dog is called Rex", 0.94, THRESHOLD).event == "ADD"
    assert judge("Blue is my favourite colour", "My favourite colour is blue", 0.5, THRESHOLD).reason == "new"
    assert judge("Blue is my favourite colour", "My favourite colour is blue", THRESHOLD, THRESHOLD).event == "MERGE"


def test_names_are_capitals_that_are_not_sentence_openers() -> None:
    assert facts("Alice moved to Paris. Then she met Bob.").names == {"alice", "paris", "bob"}
    assert facts("My sister lives here. The house is big. I'm happy").names == set()
    assert facts("Last week I met Sarah's brother").names == {"sarah"}
    # A name of one text only has to appear somewhere in the other, whatever its case.
    assert verdict("I met Rex", "i met rex") == ("NOOP", "identical")
    assert verdict("Yesterday I met ALICE", "I met alice yesterday") == ("MERGE", "paraphrase")


def test_numbers_and_times_are_canonical_multisets() -> None:
    assert facts("two and 2 and second and 2nd").numbers == ("#2", "#2", "2", "2")
    assert facts("a hundred, 1,000 and 3.5 at 10:30").numbers == ("100", "1000", "10:30", "3.5")
    assert facts("Mondays, last week, next Friday, 3 days ago").times == ("ago", "day", "last week", "monday",
                                                                          "next friday")
    assert facts("you may go, we march on").times == ()  # lower-case 'may'/'march' are verbs
    assert facts("due in May, due in March").times == ("march", "may")
    assert verdict("I have 2 cats and 2 dogs", "I have 2 cats and 3 dogs") == ("ADD", "number")


def test_normalize_ignores_case_punctuation_and_spacing() -> None:
    assert normalize("  My dog's  name\nis REX!! ") == "my dogs name is rex"
    assert normalize("I don\u2019t") == normalize("i dont") == "i dont"
