"""Load test for a running memserve: a mix of what its users do.

    .venv/bin/locust -f benchmarks/locustfile.py --host http://127.0.0.1:8000 \\
        --headless -u 8 -r 2 -t 2m --csv /tmp/memserve

Each simulated user has its own memserve user id: it remembers facts, searches them,
chats with memory (half the chats streamed, read to the end) and sometimes repeats a
question, which the response cache answers. For a streamed chat locust's own row times
the response headers; two extra rows time what a user sees: `ttft` (first content
chunk) and `whole stream` (until `[DONE]`).
"""

from __future__ import annotations

import json
import random
import time
import uuid

from locust import HttpUser, between, events, task

MODEL = "smollm2-135m-instruct"

FACTS = [
    "My favourite food is spicy ramen.", "I have a cat called Miso.", "I work as a hospital pharmacist.",
    "I am training for a half marathon in May.", "My sister lives in Lisbon.", "I am allergic to penicillin.",
    "I play bass guitar in a jazz trio.", "I drive an old green Volvo.",
]
QUESTIONS = [
    "What should I cook tonight?", "What is my cat's name?", "Where does my sister live?",
    "Which medicine must I avoid?", "What instrument do I play?", "How is my training going?",
]


class MemserveUser(HttpUser):
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.user_id = f"load-{uuid.uuid4().hex[:10]}"
        self.seq = 0
        for fact in random.sample(FACTS, 3):
            self._remember(fact)

    def _remember(self, text: str) -> None:
        with self.client.post("/v1/memories", json={"user": self.user_id, "text": text},
                              name="/v1/memories [add]", catch_response=True) as response:
            if response.status_code == 200:
                self.seq = max(self.seq, response.json()["seq"])
            else:
                response.failure(f"{response.status_code}: {response.text[:200]}")

    def _chat_body(self, question: str, stream: bool) -> dict[str, object]:
        return {"model": MODEL, "user": self.user_id, "max_tokens": 32, "temperature": 0, "stream": stream,
                "messages": [{"role": "user", "content": question}]}

    @task(1)
    def remember(self) -> None:
        self._remember(random.choice(FACTS))

    @task(2)
    def search(self) -> None:
        body = {"user": self.user_id, "query": random.choice(QUESTIONS), "k": 5, "min_seq": self.seq}
        self.client.post("/v1/memories/search", json=body, name="/v1/memories/search")

    @task(3)
    def chat(self) -> None:
        self.client.post("/v1/chat/completions", json=self._chat_body(random.choice(QUESTIONS), False),
                         name="/v1/chat/completions")

    @task(3)
    def chat_streamed(self) -> None:
        started = time.perf_counter()
        first: float | None = None
        with self.client.post("/v1/chat/completions", json=self._chat_body(random.choice(QUESTIONS), True),
                              name="/v1/chat/completions [stream]", stream=True, catch_response=True) as response:
            done = False
            for line in response.iter_lines():
                if not line.startswith(b"data: "):
                    continue
                if line == b"data: [DONE]":
                    done = True
                    break
                event = json.loads(line[6:])
                if "error" in event:
                    response.failure(event["error"].get("message", "error event"))
                    return
                if first is None and any(c.get("delta", {}).get("content") for c in event.get("choices", [])):
                    first = time.perf_counter()
            if not done:
                response.failure("the stream ended without [DONE]")
                return
        ended = time.perf_counter()
        if first is not None:
            _report("ttft", first - started)
        _report("whole stream", ended - started)


def _report(name: str, seconds: float) -> None:
    events.request.fire(request_type="SSE", name=name, response_time=seconds * 1000, response_length=0,
                        exception=None, context={})
