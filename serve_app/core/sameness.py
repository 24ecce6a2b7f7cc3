"""Do two memory texts state the same thing? The rule that decides ADD, MERGE or NOOP.

Embeddings place "I met Sarah at the gym on Monday." and "... on Friday." next to each
other (cosine ~0.97 with MiniLM), so cosine alone merged different events and the older
one was lost. Close embeddings are therefore necessary but not sufficient: two texts that
differ in a *fact-bearing token* are different memories, whatever their cosine. The
fact-bearing tokens are the ones a sentence encoder blurs and a user cares about:

- numbers: digits (`170`, `3.5`, `2024-05-01`, `3pm`, `1st`) and number words
  (`one`..`twenty`, tens, `hundred`, `thousand`, `first`..`twelfth`), canonicalised so
  "two" == "2" and "first" == "1st"; compared as multisets;
- time expressions: weekday and month names, `today`/`tomorrow`/`yesterday`, parts of
  the day, seasons, units (`week`, `year`...) with their `last`/`next`/`this`/`every`
  qualifier ("last week" != "next week"), `ago`, `now`, `recently`...; multisets;
- proper names: capitalised words not at a sentence start, and sentence-start words
  that are not common sentence openers ("Alice moved..."). A name of one text must
  occur, in any case, somewhere in the other; so "called Rex" == "called rex!" but
  "Alice moved to Paris" != "Bob moved to Paris";
- negation: `not`, `no`, `never`, `n't`, `none`, `nobody`, `nothing`, `without`...;
  the number of markers must agree ("I like tea" != "I don't like tea").

The rule errs towards ADD: a false ADD costs one extra row the consolidator can still
evict, a false MERGE silently destroys a fact. Pure and Ray-free; `judge` is the entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Event = Literal["ADD", "MERGE", "NOOP"]
Difference = Literal["number", "time", "name", "negation"]
# Why an item got its event: no near memory, the kind of fact that kept it apart from one,
# the same text, or the same facts worded differently.
Reason = Literal["new", "number", "time", "name", "negation", "identical", "paraphrase", "target_gone"]

_RSQUO = "\u2019"  # the typographic apostrophe phones type


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


def _list(words: str) -> list[str]:
    return words.split()


_NUMBER_WORDS = {
    w: str(i) for i, w in enumerate(_list(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty"))
} | {w: str(10 * i) for i, w in enumerate(_list("thirty forty fifty sixty seventy eighty ninety"), start=3)} | {
    "hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000", "dozen": "12",
    "once": "1x", "twice": "2x", "half": "0.5",
}
_ORDINALS = {
    w: f"#{i}" for i, w in enumerate(_list(
        "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth"), start=1)
}
_WEEKDAYS = _set("monday tuesday wednesday thursday friday saturday sunday")
_MONTHS = _set("january february march april may june july august september october november december")
# Month names that are also common lower-case words count only when capitalised.
_MONTHS_CAPITALISED_ONLY = frozenset({"may", "march"})
_TIME_UNITS = _set(
    "day week weekend fortnight month year decade century hour minute morning afternoon evening night "
    "spring summer autumn winter semester term quarter")
_TIME_QUALIFIERS = _set("last next this past coming every each previous following")
_PLURAL_TIMES = _WEEKDAYS | _TIME_UNITS
_TIME_WORDS = _set(
    "today tomorrow yesterday tonight noon midnight ago now currently recently lately soon later earlier "
    "previously formerly anymore still already daily weekly monthly yearly annually nightly")
_NEGATIONS = _set(
    "not no never none nobody nothing nowhere neither nor without cannot dont doesnt didnt isnt arent wasnt "
    "werent cant couldnt wouldnt shouldnt wont havent hasnt hadnt aint")
# Words that open a sentence without being names, so a capital there says nothing.
_OPENERS = _set(
    "a an the i i'm i've i'd i'll my me mine we our ours us you your yours he him his she her hers it its they "
    "them their theirs this that these those there here what when where which who whom whose why how "
    "and but or so if then also because as at by for from in into of on to with about after before during "
    "since until while is are was were be been am do does did have has had will would can could should "
    "shall may might must let please yes no not never ok okay well oh hey hi hello thanks thank just "
    "remember note today tomorrow yesterday tonight now every each all some any many most much more one "
    "user assistant system")

_TOKEN = re.compile(
    r"(?P<number>\d+(?:[.,:/-]\d+)*(?:\s?(?:(?:am|pm|st|nd|rd|th)\b|[ap]\.m\.))?)"
    r"|(?P<word>[^\W\d_]+(?:['\u2019][^\W\d_]+)*)"
    r"|(?P<stop>[.!?;:\n]+)",
    re.UNICODE | re.IGNORECASE,
)


@dataclass(frozen=True)
class Facts:
    """What `judge` compares: the fact-bearing tokens and the normalised text."""

    normalized: str  # lower case, no punctuation, single spaces: equal means the same text
    words: frozenset[str]  # every word in lower case, with and without a possessive 's
    numbers: tuple[str, ...]  # sorted multiset, canonical forms
    times: tuple[str, ...]  # sorted multiset, e.g. ("friday",) or ("last week",)
    names: frozenset[str]  # lower case
    negations: int


@dataclass(frozen=True)
class Verdict:
    event: Event
    reason: Reason


def normalize(text: str) -> str:
    """Case, apostrophes, punctuation and runs of whitespace do not change what is said."""
    flat = text.lower().replace(_RSQUO, "").replace("'", "")
    return " ".join(re.findall(r"\w+", flat))


def _number(raw: str) -> str:
    """'1,000' == '1000', '3 PM' == '3pm', '2nd' == '#2' (as is 'second')."""
    value = re.sub(r"(?<=\d),(?=\d{3}\b)", "", raw.lower()).replace(" ", "").replace(".m.", "m")
    return re.sub(r"^(\d+)(st|nd|rd|th)$", r"#\1", value)


def _base(word: str) -> str:
    """'Sarah's' -> 'sarah', "don't" -> "don't" (only a possessive is cut)."""
    lower = word.lower().replace(_RSQUO, "'")
    return lower[:-2] if lower.endswith("'s") else lower


def _is_negation(word: str) -> bool:
    lower = word.lower().replace(_RSQUO, "'")
    return lower in _NEGATIONS or lower.endswith("n't") or lower.replace("'", "") in _NEGATIONS


def _time_word(word: str, lower: str) -> str | None:
    """The canonical time token of one word, or None."""
    singular = lower[:-1] if lower.endswith("s") and lower[:-1] in _PLURAL_TIMES else lower
    if singular in _WEEKDAYS or singular in _TIME_UNITS or lower in _TIME_WORDS:
        return singular
    if lower in _MONTHS and (lower not in _MONTHS_CAPITALISED_ONLY or word[0].isupper()):
        return lower
    return None


def _is_name(word: str, lower: str, sentence_start: bool) -> bool:
    if not word[0].isupper() or lower == "i" or lower.startswith("i'") or lower in _TIME_QUALIFIERS:
        return False
    return not sentence_start or lower not in _OPENERS


def facts(text: str) -> Facts:
    """Read the fact-bearing tokens of one text (see the module docstring)."""
    numbers: list[str] = []
    times: list[str] = []
    names: set[str] = set()
    words: set[str] = set()
    negations = 0
    start, qualifier = True, ""
    for match in _TOKEN.finditer(text):
        if match.lastgroup == "stop":
            start, qualifier = True, ""
            continue
        if match.lastgroup == "number":
            numbers.append(_number(match.group()))
            start, qualifier = False, ""
            continue
        word = match.group()
        lower = _base(word)
        words.update({lower, word.lower().replace(_RSQUO, "'")})
        negations += _is_negation(word)
        time = _time_word(word, lower)
        if lower in _NUMBER_WORDS or lower in _ORDINALS:
            numbers.append(_NUMBER_WORDS.get(lower) or _ORDINALS[lower])
        elif time is not None:
            times.append(f"{qualifier} {time}" if qualifier else time)
        elif _is_name(word, lower, start):
            names.add(lower)
        qualifier = lower if lower in _TIME_QUALIFIERS else ""
        start = False
    return Facts(normalize(text), frozenset(words), tuple(sorted(numbers)), tuple(sorted(times)),
                 frozenset(names), negations)


def difference(a: Facts, b: Facts) -> Difference | None:
    """The first kind of fact in which the two texts disagree, or None."""
    if a.negations != b.negations:
        return "negation"
    if a.numbers != b.numbers:
        return "number"
    if a.times != b.times:
        return "time"
    if not a.names <= b.words or not b.names <= a.words:
        return "name"
    return None


def judge(new: str, old: str, similarity: float, threshold: float) -> Verdict:
    """ADD, MERGE or NOOP for a new text against one existing text at `similarity` (cosine).

    Below `threshold` the texts are unrelated (ADD, reason "new"). Above it, the same
    normalised text is a NOOP, a disagreement in a fact-bearing token is an ADD (reason
    the kind of fact), and anything else is the same fact reworded: MERGE.
    """
    if similarity < threshold:
        return Verdict("ADD", "new")
    a, b = facts(new), facts(old)
    if a.normalized == b.normalized:
        return Verdict("NOOP", "identical")
    kind = difference(a, b)
    return Verdict("ADD", kind) if kind is not None else Verdict("MERGE", "paraphrase")
