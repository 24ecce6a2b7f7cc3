"""How well the served model extracts facts (`memory.extraction: llm`), measured honestly.

    .venv/bin/python benchmarks/eval_extraction.py                 # in process: real vLLM engine + MiniLM, no Ray
    .venv/bin/python benchmarks/eval_extraction.py --url http://127.0.0.1:8000   # a running app

Snippets come from LoCoMo (../shared/data/locomo/locomo10.json, read there, never copied
into this repository), whose annotators wrote per session "observations": facts about a
speaker, each citing the turn that states it. A snippet is that turn with the turn before
it, sent as a `messages` write with `"extraction": "llm"` (the speaker of the fact as
`user`, the other as `assistant`, both with their names); the expected fact is the
observation. The first `--per-conversation` single-turn observations of session 1 of each
conversation are taken, in order: nothing is picked by how the model does on them.

Scored per snippet:
- valid: extraction answered `done` (JSON under the schema, not cut short, in time);
- hit: one of the extracted facts says the expected fact, judged by MiniLM cosine >= 0.6
  (and, stricter, >= 0.75), the same embedder memserve searches with;
- grounded: the share of extracted facts whose content words (4+ letters) are mostly
  (>= 50%) in the snippet, a cheap proxy for facts not made up.

`--decisions` also probes the second LLM step: the expected fact is first written as an
extracted fact of a fresh user (metadata `extracted: true`), then the snippet is sent;
a fact that states it should be a NOOP or an UPDATE of it, not a second ADD.

The figures are for whatever model the app serves (the bundled SmolLM2-135M by default);
they are reported as measured, not tuned for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from locomo import DEFAULT_DATA, MiniLM, in_process_app  # the same in-process app and MiniLM

HIT, STRICT_HIT, GROUNDED = 0.6, 0.75, 0.5

logger = logging.getLogger("eval_extraction")


@dataclass(frozen=True)
class Snippet:
    """Two turns of a LoCoMo session and the fact an annotator wrote about the second."""

    messages: list[dict[str, str]]
    expected: str


@dataclass
class Outcome:
    valid: bool
    facts: list[str]
    events: list[str]
    seconds: float
    error: str | None = None
    hit: float = 0.0  # best cosine of an extracted fact to the expected one
    grounded: list[bool] = field(default_factory=list)


def snippets(data: list[dict[str, Any]], per_conversation: int) -> list[Snippet]:
    found: list[Snippet] = []
    for sample in data:
        conversation = sample["conversation"]
        turns = conversation["session_1"]
        position = {t["dia_id"]: i for i, t in enumerate(turns)}
        taken = 0
        observations = sample["observation"]["session_1_observation"]
        for speaker, facts in observations.items():
            for text, evidence in facts:
                if taken == per_conversation:
                    break
                if not isinstance(evidence, str) or evidence not in position or position[evidence] == 0:
                    continue
                i = position[evidence]
                messages = [{"role": "user" if t["speaker"] == speaker else "assistant", "name": t["speaker"],
                             "content": t["text"]} for t in turns[i - 1: i + 1]]
                found.append(Snippet(messages, text))
                taken += 1
    return found


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]{4,}", text.lower())}


def grounded(fact: str, snippet: Snippet) -> bool:
    said = content_words(" ".join(m["name"] + " " + m["content"] for m in snippet.messages))
    words = content_words(fact)
    return not words or len(words & said) / len(words) >= GROUNDED


class EngineLLM:
    """The LLM deployment's one method over the real vLLM engine, in this process."""

    def __init__(self) -> None:
        from serve_app.engine import LLMEngine
        from serve_app.settings import LLMSettings

        self.engine = LLMEngine(LLMSettings())

    async def generate(self, request: Any) -> AsyncIterator[Any]:
        async for chunk in self.engine.stream(request):
            yield chunk


async def extract(client: httpx.AsyncClient, user: str, snippet: Snippet) -> Outcome:
    started = time.perf_counter()
    response = await client.post("/v1/memories", json={"user": user, "messages": snippet.messages,
                                                       "extraction": "llm"})
    response.raise_for_status()
    report = response.json()["extraction"]
    return Outcome(valid=report["status"] == "done", facts=[f["text"] for f in report["facts"]],
                   events=[f["event"] for f in report["facts"]], seconds=time.perf_counter() - started,
                   error=report["error"])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data = json.loads(args.data.read_text())
    chosen = snippets(data, args.per_conversation)
    model = MiniLM()
    with tempfile.TemporaryDirectory() as tmp:
        if args.url:
            transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport()
            base = args.url
        else:
            transport, base = httpx.ASGITransport(app=in_process_app(tmp, model, EngineLLM())), "http://memserve"
        async with httpx.AsyncClient(transport=transport, base_url=base, timeout=600) as client:
            outcomes, probes = [], []
            for n, snippet in enumerate(chosen):
                outcome = await extract(client, f"eval-{uuid.uuid4().hex[:8]}", snippet)
                if outcome.facts:
                    cosines = model.encode(outcome.facts) @ model.encode([snippet.expected])[0]
                    outcome.hit = float(cosines.max())
                outcome.grounded = [grounded(f, snippet) for f in outcome.facts]
                outcomes.append(outcome)
                logger.info("%d/%d expected %r -> %s %r (best cosine %.2f, %.1f s)", n + 1, len(chosen),
                            snippet.expected, "ok" if outcome.valid else f"FAILED {outcome.error}", outcome.facts,
                            outcome.hit, outcome.seconds)
                if args.decisions:
                    probes.append(await probe(client, model, snippet))
    return report(outcomes, probes)


async def probe(client: httpx.AsyncClient, model: MiniLM, snippet: Snippet) -> list[str]:
    """The events of the facts that restate the expected fact, already stored as extracted."""
    user = f"eval-{uuid.uuid4().hex[:8]}"
    seeded = await client.post("/v1/memories", json={"user": user, "text": snippet.expected,
                                                     "metadata": {"extracted": True}})
    seeded.raise_for_status()
    outcome = await extract(client, user, snippet)
    if not outcome.facts:
        return []
    cosines = model.encode(outcome.facts) @ model.encode([snippet.expected])[0]
    return [event for event, cosine in zip(outcome.events, cosines, strict=True) if cosine >= HIT]


def report(outcomes: list[Outcome], probes: list[list[str]]) -> dict[str, Any]:
    n = len(outcomes)
    facts = [g for o in outcomes for g in o.grounded]
    result: dict[str, Any] = {
        "snippets": n,
        "valid_json": sum(o.valid for o in outcomes) / n,
        "hit": sum(o.hit >= HIT for o in outcomes) / n,
        "strict_hit": sum(o.hit >= STRICT_HIT for o in outcomes) / n,
        "facts_per_snippet": sum(len(o.facts) for o in outcomes) / n,
        "grounded_facts": sum(facts) / len(facts) if facts else 0.0,
        "seconds_per_write_p50": statistics.median(o.seconds for o in outcomes),
    }
    if probes:
        events = Counter(e for p in probes for e in p)
        restated = sum(events.values())
        result["decisions_on_restated_facts"] = dict(events)
        result["restated_not_duplicated"] = (events["NOOP"] + events["UPDATE"]) / restated if restated else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running app (default: build one in this process)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--per-conversation", type=int, default=2, help="snippets per LoCoMo conversation")
    parser.add_argument("--decisions", action=argparse.BooleanOptionalAction, default=True,
                        help="also probe the ADD/UPDATE/DELETE/NOOP step")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    logger.warning("extraction: %s", json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("vllm", "httpx", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    main()
