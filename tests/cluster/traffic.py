"""Client traffic for the fault tests: memory writes, searches that must read those writes,
and chats (whole and streamed), each request under a client deadline, every outcome kept.

An outcome is `ok` (200 and a well-formed body), a `clear` error (a 4xx/5xx whose body is
OpenAI's error object, or a stream that reports the error in-band and ends with [DONE]),
or neither: no answer within the deadline (a hang), a dropped connection, a plain-text
error, a stream cut short. Every acknowledged write is kept to be checked afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from serve_app.core.sharding import shard_for

MODEL = "smollm2-135m-instruct"
KINDS = ("write", "search", "chat", "stream")
# Client deadlines: how long any request may take, whatever fails underneath.
DEADLINE_S = {"write": 30.0, "search": 30.0, "chat": 60.0, "stream": 60.0}


def users_per_shard(num_shards: int, prefix: str) -> list[str]:
    """One user per shard, so every shard (and its replicas on every node) takes traffic."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < num_shards:
        name = f"{prefix}-{i}"
        found.setdefault(shard_for(name, num_shards), name)
        i += 1
    return [found[s] for s in range(num_shards)]


@dataclass
class Ack:
    user: str
    id: str
    text: str
    seq: int


@dataclass
class Outcome:
    kind: str
    started: float
    ended: float
    status: int | None  # None: no HTTP answer (deadline, connection)
    ok: bool
    clear: bool  # an error the client can act on: OpenAI's error object (or in-band for a stream)
    detail: str = ""
    code: str | None = None  # the error object's `code`
    retry_after: str | None = None
    degraded: tuple[str, ...] = ()  # a chat answered without these stages (`memserve.degraded`)

    @property
    def took(self) -> float:
        return self.ended - self.started


def _error_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) and "message" in error and "type" in error else None


def _degraded(body: Any) -> tuple[str, ...]:
    """The stages a chat answer (or one stream chunk) says it went on without."""
    info = body.get("memserve") if isinstance(body, dict) else None
    return tuple(info.get("degraded") or ()) if isinstance(info, dict) else ()


@dataclass
class Traffic:
    """Request loops against `base_url` until `stop` is set: one writer per user, one
    searcher, one chat loop (whole and streamed answers in turn)."""

    base_url: str
    users: list[str]
    outcomes: list[Outcome] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)  # a search after the ack (min_seq) that missed it
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    pause_s: float = 0.25  # between one loop's requests: load that leaves the 2 cores room to recover

    async def run(self, fault: Callable[[], float], settle: Callable[[Traffic, float], bool], max_s: float) -> float:
        """Traffic alone for a few seconds, then `fault()` (blocking, run in a thread; it
        returns the monotonic time the fault took effect), then traffic until
        `settle(self, fault_at)` holds or `max_s` passed. Returns the fault's time."""
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        async with httpx.AsyncClient(base_url=self.base_url, limits=limits, timeout=None) as client:
            loops = [asyncio.create_task(self._writer(client, u, i)) for i, u in enumerate(self.users)]
            loops += [asyncio.create_task(self._searcher(client)), asyncio.create_task(self._chatter(client))]
            try:
                await asyncio.sleep(4)
                fault_at = await asyncio.to_thread(fault)
                deadline = time.monotonic() + max_s
                while time.monotonic() < deadline and not settle(self, fault_at):
                    await asyncio.sleep(0.5)
            finally:
                self.stop.set()
                await asyncio.gather(*loops)  # each ends within its request deadline
        return fault_at

    # -- one request, classified
    async def _call(self, kind: str, client: httpx.AsyncClient, method: str, url: str,
                    body: dict[str, Any] | None = None) -> tuple[Outcome, dict[str, Any] | None]:
        started = time.monotonic()
        try:
            async with asyncio.timeout(DEADLINE_S[kind]):
                if kind == "stream":
                    return await self._stream(client, url, body or {}, started), None
                response = await client.request(method, url, json=body)
        except TimeoutError:
            outcome = Outcome(kind, started, time.monotonic(), None, False, False, f"no answer in {DEADLINE_S[kind]} s")
            self.outcomes.append(outcome)
            return outcome, None
        except httpx.HTTPError as exc:
            outcome = Outcome(kind, started, time.monotonic(), None, False, False, f"{type(exc).__name__}: {exc}")
            self.outcomes.append(outcome)
            return outcome, None
        ended = time.monotonic()
        if response.status_code == 200:
            body = response.json()
            outcome = Outcome(kind, started, ended, 200, True, True, degraded=_degraded(body))
            self.outcomes.append(outcome)
            return outcome, body
        error = _error_object(response)
        outcome = Outcome(kind, started, ended, response.status_code, False,
                          error is not None and response.status_code >= 400,
                          (error or {}).get("message") or response.text[:200],
                          (error or {}).get("code"), response.headers.get("retry-after"))
        self.outcomes.append(outcome)
        return outcome, None

    async def _stream(self, client: httpx.AsyncClient, url: str, body: dict[str, Any], started: float) -> Outcome:
        async with client.stream("POST", url, json=body) as response:
            raw = (await response.aread()).decode(errors="replace")
        ended = time.monotonic()
        if response.status_code != 200:
            error = _error_object(response)
            outcome = Outcome("stream", started, ended, response.status_code, False, error is not None,
                              (error or {}).get("message") or raw[:200], (error or {}).get("code"),
                              response.headers.get("retry-after"))
        else:
            events = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
            done = bool(events) and events[-1] == "[DONE]"
            errors = [e for e in events[:-1] if e.startswith('{"error"')]
            if done and not errors:
                degraded = tuple(stage for e in events[:-1] for stage in _degraded(json.loads(e)))
                outcome = Outcome("stream", started, ended, 200, True, True, degraded=degraded)
            else:
                message = json.loads(errors[0])["error"]["message"] if errors else f"stream cut short: {raw[-200:]!r}"
                outcome = Outcome("stream", started, ended, 200, False, done and bool(errors), message,
                                  "in_band_error" if errors else None)
        self.outcomes.append(outcome)
        return outcome

    # -- the loops
    async def _writer(self, client: httpx.AsyncClient, user: str, w: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            text = f"{user} remembers fact number {w * 100000 + n}: the locker code is {n * 7919 % 100000:05d}"
            outcome, body = await self._call("write", client, "POST", "/v1/memories",
                                             {"user": user, "text": text, "importance": 0.9})
            if outcome.ok and body is not None:
                self.acks.append(Ack(user, body["ids"][0], text, int(body["seq"])))
            await asyncio.sleep(self.pause_s)

    async def _searcher(self, client: httpx.AsyncClient) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            if not self.acks:
                await asyncio.sleep(0.2)
                continue
            ack = self.acks[-1 - (i % min(len(self.acks), 5))]  # one of the latest acknowledged writes
            outcome, body = await self._call("search", client, "POST", "/v1/memories/search",
                                             {"user": ack.user, "query": ack.text, "k": 5, "min_seq": ack.seq})
            if outcome.ok and body is not None and ack.id not in {r["id"] for r in body["results"]}:
                self.unread.append(ack.id)
            await asyncio.sleep(self.pause_s)

    async def _chatter(self, client: httpx.AsyncClient) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            user = self.users[i % len(self.users)]
            stream = i % 2 == 0
            body = {"model": MODEL, "user": user, "max_tokens": 8, "temperature": 0, "stream": stream,
                    "messages": [{"role": "user", "content": f"What is my locker code? ({i})"}],
                    "memserve": {"cache": False, "write_back": False}}
            await self._call("stream" if stream else "chat", client, "POST", "/v1/chat/completions", body)
            await asyncio.sleep(self.pause_s)

    # -- reading the outcomes
    def after(self, t: float) -> list[Outcome]:
        return [o for o in self.outcomes if o.started >= t]

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def unclear(self) -> list[Outcome]:
        """Failures a client could not act on: hangs, dropped connections, non-JSON errors."""
        return [o for o in self.outcomes if not o.ok and not o.clear]

    def _since_fault(self, fault_at: float, kinds: tuple[str, ...]) -> list[Outcome]:
        """Requests of `kinds` that were in flight at the fault or started after it."""
        return sorted((o for o in self.outcomes if o.kind in kinds and o.ended >= fault_at), key=lambda o: o.started)

    def served_again_after(self, fault_at: float, kinds: tuple[str, ...] = KINDS) -> float | None:
        """Seconds from the fault until a client had a good answer again, for good: the
        answer to the first successful request started after the last failed one. 0.0 when
        nothing failed; None while the last request failed."""
        relevant = self._since_fault(fault_at, kinds)
        last_failure = max((o.started for o in relevant if not o.ok), default=None)
        if last_failure is None:
            return 0.0
        answered = [o.ended for o in relevant if o.ok and o.started > last_failure]
        return max(0.0, min(answered) - fault_at) if answered else None

    def steady_since(self, fault_at: float, seconds: float, kinds: tuple[str, ...] = KINDS) -> bool:
        """Every kind answered OK, and nothing failed, for the last `seconds`."""
        relevant = self._since_fault(fault_at, kinds)
        last_failure = max((o.started for o in relevant if not o.ok), default=fault_at)
        good = [o for o in relevant if o.ok and o.started > last_failure]
        if not good or time.monotonic() - good[0].started < seconds:
            return False
        return all(any(o.kind == k for o in good) for k in kinds)

    def summary(self, since: float) -> str:
        lines = []
        for kind in KINDS:
            mine = [o for o in self.outcomes if o.kind == kind]
            bad = [o for o in mine if not o.ok]
            codes = sorted({f"{o.status}/{o.code}" for o in bad})
            worst = max((o.took for o in mine), default=0.0)
            lines.append(f"{kind}: {len(mine)} requests, {len(bad)} failed {codes}, slowest {worst:.1f} s")
        failures = sorted(self.failures(), key=lambda o: o.started)
        if failures:
            lines.append(f"failures from +{failures[0].started - since:.1f} s to +{failures[-1].started - since:.1f} s"
                         f" after the fault; e.g. {failures[0].detail[:160]!r}")
        return "; ".join(lines)
