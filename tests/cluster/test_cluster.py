"""memserve on a real two-node Ray cluster (tests/cluster/conftest.py), under faults.

In order, on one cluster: (a) replicas run on both nodes; (b) the worker node killed (every
process of it, SIGKILL) during traffic, while every replicated stage still has a replica on
the head (the placement (a) checked); then, on the node that remains, (c) one replica of
every deployment killed (`ray.kill`) during traffic; (d) redis-server stopped and restarted
during traffic. Each
fault test drives memory writes, searches that must find the writes they follow, and whole
and streamed chats, every request under a client deadline, and checks: each request in
flight either succeeds or fails with a clear error (OpenAI's JSON error object with a
4xx/5xx, or an in-band error event that ends the stream) and never outlives its deadline;
every acknowledged write is there afterwards (listed, and found by a search); the app
serves again, in a time that is measured and printed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from scripts.cluster import LocalCluster
from tests.cluster.conftest import Killer, measured
from tests.cluster.traffic import MODEL, Ack, Outcome, Traffic, users_per_shard
from tests.redis_server import RedisServer

pytestmark = pytest.mark.cluster

STAGES = ("Embedder", "VectorSearch_0", "VectorSearch_1", "VectorSearch_2", "Cache")  # replicated, on any node
MEMORY = ("write", "search")
CHATS = ("chat", "stream")


# ---------------------------------------------------------------------------- helpers


def running(cluster: LocalCluster) -> dict[str, list[dict[str, Any]]]:
    """RUNNING replicas per deployment, each with the role of its node (`head`/`worker`)."""
    roles = cluster.node_roles()
    found: dict[str, list[dict[str, Any]]] = {}
    for replica in cluster.replicas():
        if replica["state"] == "RUNNING":
            role = roles.get(replica["node_id"], "dead")
            found.setdefault(replica["deployment"], []).append({**replica, "role": role})
    return found


def at_target(cluster: LocalCluster) -> bool:
    """Every deployment runs as many replicas as Serve wants, on live nodes, and nothing else."""
    details = cluster.serve_details() or {}
    deployments = details.get("applications", {}).get("memserve", {}).get("deployments", {})
    live = set(cluster.node_roles())
    if not deployments or not live:
        return False
    for d in deployments.values():
        replicas = d.get("replicas") or []
        ok = [r for r in replicas if r["state"] == "RUNNING" and r["node_id"] in live]
        if len(ok) != len(replicas) or len(ok) < int(d.get("target_num_replicas") or 1):
            return False
    return True


class Watch:
    """Samples `probe()` every second in a thread; remembers when it first held."""

    def __init__(self, probe: Callable[[], bool]) -> None:
        self.probe, self.since, self.first_true = probe, time.monotonic(), None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, since: float) -> None:
        self.since = since
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                if self.probe():
                    self.first_true = time.monotonic()
                    return
            except Exception:  # a dashboard that cannot answer yet
                pass

    def stop(self) -> float | None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return None if self.first_true is None else self.first_true - self.since


def listed_ids(url: str, user: str) -> set[str]:
    ids: set[str] = set()
    cursor = None
    with httpx.Client(base_url=url, timeout=30) as client:
        while True:
            params: dict[str, Any] = {"user": user, "limit": 200}
            if cursor:
                params["cursor"] = cursor
            response = client.get("/v1/memories", params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            ids |= {m["id"] for m in body["data"]}
            cursor = body.get("next_cursor")
            if not cursor:
                return ids


def check_acknowledged_writes(url: str, acks: list[Ack], searched: int = 12) -> None:
    """Every acknowledged write is listed, and the latest ones are found by a search that
    asks for them (min_seq): the shards' indexes caught up with the store."""
    assert acks, "no write was acknowledged"
    for user in {a.user for a in acks}:
        listed = listed_ids(url, user)
        missing = [a.id for a in acks if a.user == user and a.id not in listed]
        assert not missing, f"acknowledged writes of {user} are gone: {missing[:5]} ({len(missing)})"
    with httpx.Client(base_url=url, timeout=30) as client:
        for ack in acks[-searched:]:
            response = client.post("/v1/memories/search",
                                   json={"user": ack.user, "query": ack.text, "k": 5, "min_seq": ack.seq})
            assert response.status_code == 200, response.text
            assert ack.id in {r["id"] for r in response.json()["results"]}, f"search did not find {ack}"


def describe(outcomes: list[Outcome], since: float) -> list[str]:
    return [f"{o.kind} +{o.started - since:.1f}s took {o.took:.1f}s: {o.status} {o.code} {o.detail[:120]!r}"
            for o in outcomes[:10]]


def assert_clear_and_bounded(traffic: Traffic, since: float, allowed: Callable[[Outcome], bool] = lambda o: False,
                             ) -> None:
    """No request outlived its deadline; every failure is a clear error (or `allowed`)."""
    unclear = [o for o in traffic.unclear() if not allowed(o)]
    assert not unclear, "requests failed without a clear error or hung:\n" + "\n".join(describe(unclear, since))
    assert not traffic.unread, f"searches after an acknowledged write missed it: {traffic.unread[:5]}"


def run_traffic(cluster: LocalCluster, users: list[str], fault: Callable[[], float],
                settle: Callable[[Traffic, float], bool], max_s: float, pause_s: float = 0.25,
                ) -> tuple[Traffic, float]:
    traffic = Traffic(cluster.url, users, pause_s=pause_s)
    fault_at = asyncio.run(traffic.run(fault, settle, max_s))
    return traffic, fault_at


def serving(cluster: LocalCluster) -> None:
    """A chat and a memory round trip answer normally."""
    with httpx.Client(base_url=cluster.url, timeout=120) as client:
        chat = client.post("/v1/chat/completions", json={
            "model": MODEL, "max_tokens": 4, "memserve": {"cache": False},
            "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200, chat.text
        write = client.post("/v1/memories", json={"user": "after-fault", "text": f"still here at {time.time()}"})
        assert write.status_code == 200, write.text


# ---------------------------------------------------------------------------- (a)


def test_replicas_run_on_both_nodes(cluster: LocalCluster) -> None:
    """Serve's own status: the LLM and the Orchestrators on the head (they need
    `memserve_head`), and every replicated stage on both nodes (Serve spreads them)."""
    roles = cluster.node_roles()
    assert sorted(roles.values()) == ["head", "worker"], roles
    placed = {name: {r["role"] for r in replicas} for name, replicas in running(cluster).items()}
    assert placed["LLM"] == {"head"} and placed["Orchestrator"] == {"head"}, placed
    for stage in STAGES:
        assert placed[stage] == {"head", "worker"}, f"{stage} is not spread over both nodes: {placed}"
    assert set(placed) == {*STAGES, "LLM", "Orchestrator", "Consolidator"}
    measured("placement", ", ".join(f"{name}: {'+'.join(sorted(where))}" for name, where in sorted(placed.items())))


# ---------------------------------------------------------------------------- (b)


def test_losing_the_worker_node(cluster: LocalCluster) -> None:
    """Every process of the worker node SIGKILLed at once (a machine lost), under traffic:
    Serve starts the replicas it hosted on the head, requests in flight succeed or fail
    clearly, every acknowledged write is there and searchable, and the app serves again."""
    before = running(cluster)
    on_worker = sorted({name for name, replicas in before.items() for r in replicas if r["role"] == "worker"})
    assert on_worker, f"nothing runs on the worker node: {before}"
    for stage in STAGES:  # what keeps answering while Serve replaces the rest
        assert any(r["role"] == "head" for r in before[stage]), f"every {stage} replica is on the worker: {before}"
    (worker,) = cluster.state.workers
    worker_id = next(node_id for node_id, role in cluster.node_roles().items() if role == "worker")
    users = users_per_shard(3, "node-loss")
    moved = Watch(lambda: at_target(cluster) and worker_id not in cluster.node_roles())

    def crash() -> float:
        at = cluster.kill_worker(worker)
        moved.start(at)
        return at

    traffic, killed_at = run_traffic(cluster, users, crash, lambda t, at: (
        time.monotonic() > at + 20 and t.steady_since(at, 8) and moved.first_true is not None), 180)
    restored = moved.stop()
    again = traffic.served_again_after(killed_at)
    measured("(b) worker node killed", f"hosted {', '.join(on_worker)}; served again after "
             f"{again if again is None else round(again, 1)} s; every replica running again on the head after "
             f"{restored if restored is None else round(restored, 1)} s; {traffic.summary(killed_at)}")
    assert_clear_and_bounded(traffic, killed_at)
    for o in traffic.failures():
        assert o.status == 503 or (o.status == 200 and o.code == "in_band_error"), describe([o], killed_at)
    assert again is not None and again < 90
    assert restored is not None, "Serve did not bring every deployment back on the remaining node"
    after = running(cluster)
    assert {r["role"] for replicas in after.values() for r in replicas} == {"head"}
    for stage in (*STAGES, "LLM", "Orchestrator", "Consolidator"):
        assert after.get(stage), f"{stage} has no running replica"
    check_acknowledged_writes(cluster.url, traffic.acks)
    serving(cluster)


# ---------------------------------------------------------------------------- (c)


def kill_one_replica_of(cluster: LocalCluster, killer: Killer, deployments: tuple[str, ...]
                        ) -> tuple[Callable[[], float], set[str]]:
    """A fault that `ray.kill`s one RUNNING replica of each deployment (actors resolved
    now), and the ids of the replicas it kills."""
    now = running(cluster)
    chosen = [now[d][0] for d in deployments]
    killer.resolve([r["actor_name"] for r in chosen])
    return killer.kill, {r["replica_id"] for r in chosen}


def replaced(cluster: LocalCluster, killed: set[str]) -> bool:
    return at_target(cluster) and not killed & {r["replica_id"] for r in cluster.replicas()}


def test_killing_a_replica_of_each_stage_loses_nothing(cluster: LocalCluster, killer: Killer) -> None:
    """One replica each of the Embedder, every VectorSearch shard, the Cache and the
    Consolidator killed at once: the surviving replicas answer, Serve replaces the dead."""
    users = users_per_shard(3, "kill-stage")
    fault, killed = kill_one_replica_of(cluster, killer, (*STAGES, "Consolidator"))
    restored = Watch(lambda: replaced(cluster, killed))

    def kill() -> float:
        at = fault()
        restored.start(at)
        return at

    traffic, fault_at = run_traffic(cluster, users, kill, lambda t, at: (
        time.monotonic() > at + 10 and t.steady_since(at, 8) and restored.first_true is not None), 180)
    took = restored.stop()
    again = traffic.served_again_after(fault_at)
    measured("(c) stage replicas killed", f"served again after {again if again is None else round(again, 1)} s, "
             f"replicas replaced after {took if took is None else round(took, 1)} s; {traffic.summary(fault_at)}")
    assert_clear_and_bounded(traffic, fault_at)
    for o in traffic.failures():
        assert o.status == 503 and o.code == "unavailable" and o.retry_after, describe([o], fault_at)
    assert again is not None and again < 60
    assert took is not None, "Serve did not replace the killed replicas in time"
    check_acknowledged_writes(cluster.url, traffic.acks)


def test_killing_an_orchestrator_replica_fails_only_its_requests_in_flight(
        cluster: LocalCluster, killer: Killer) -> None:
    """The ingress replica itself: what it was answering is lost with it, and Ray's proxy
    answers those requests with its own plain-text 500 (nothing of memserve is left to
    answer; a stream already answering is cut). Every later request goes to the other
    replica; nothing hangs; no acknowledged write is lost."""
    users = users_per_shard(3, "kill-ingress")
    fault, _ = kill_one_replica_of(cluster, killer, ("Orchestrator",))
    traffic, fault_at = run_traffic(cluster, users, fault,
                                    lambda t, at: time.monotonic() > at + 8 and t.steady_since(at, 6), 90)
    again = traffic.served_again_after(fault_at)
    measured("(c) Orchestrator replica killed", f"served again after {again if again is None else round(again, 1)} s;"
             f" {traffic.summary(fault_at)}")

    def lost_with_the_replica(o: Outcome) -> bool:
        # In flight when it died (allowing for Ray to learn of the death): Ray's proxy
        # answers 500 "Internal Server Error", or the stream it was sending ends early.
        cut = o.kind == "stream" and (o.detail.startswith("stream cut short") or "incomplete chunked read" in o.detail)
        return o.started < fault_at + 2 and o.took < 30 and (
            (o.status == 500 and "Internal Server Error" in o.detail) or cut)

    assert_clear_and_bounded(traffic, fault_at, allowed=lost_with_the_replica)
    assert again is not None and again < 30
    check_acknowledged_writes(cluster.url, traffic.acks)


def test_killing_the_llm_replica(cluster: LocalCluster, killer: Killer) -> None:
    """The one engine replica: memory traffic never notices; a stream it was generating
    ends with an in-band error; chats are answered again once Serve has started a new
    engine (the measured time is mostly vLLM loading on 2 busy cores)."""
    users = users_per_shard(3, "kill-llm")
    fault, killed = kill_one_replica_of(cluster, killer, ("LLM",))
    restored = Watch(lambda: replaced(cluster, killed))

    def kill() -> float:
        at = fault()
        restored.start(at)
        return at

    # Light memory traffic: it only has to show that memories do not need the engine.
    traffic, fault_at = run_traffic(cluster, users, kill, lambda t, at: (
        time.monotonic() > at + 10 and t.steady_since(at, 5) and restored.first_true is not None), 300, pause_s=0.5)
    took = restored.stop()
    again = traffic.served_again_after(fault_at, CHATS)
    measured("(c) LLM replica killed", f"new engine replica running after {took if took is None else round(took, 1)}"
             f" s, chats answered again after {again if again is None else round(again, 1)} s; "
             f"{traffic.summary(fault_at)}")
    assert traffic.served_again_after(fault_at, MEMORY) == 0.0, "memory traffic failed while the LLM restarted"
    assert again is not None, "chats were not served again"
    check_acknowledged_writes(cluster.url, traffic.acks)
    # No chat waits for the new engine past its deadline: after `server.generation_start_timeout_s`
    # (20 s in configs/cluster.yaml) the Orchestrator answers 503 + Retry-After instead.
    assert_clear_and_bounded(traffic, fault_at)
    for o in traffic.failures():
        assert o.status in (200, 503), describe([o], fault_at)  # 200: an in-band error event


# ---------------------------------------------------------------------------- (d)


def test_redis_restart_is_a_503_then_recovers_without_restarting_the_app(
        cluster: LocalCluster, cluster_redis: RedisServer) -> None:
    """redis-server stopped for 8 s, then started again on the same port and directory (it
    replays its append-only file): 503 `unavailable` with Retry-After while it is down,
    answers again once it is back, no replica restarted."""
    users = users_per_shard(3, "redis-restart")
    replicas_before = {r["replica_id"] for r in cluster.replicas()}
    restarting: list[float] = []  # Redis may accept connections from this moment on
    restarted: list[float] = []  # ... and surely does from this one (start() has pinged it)

    def outage() -> float:
        cluster_redis.stop()
        stopped = time.monotonic()
        try:
            time.sleep(8)
        finally:
            restarting.append(time.monotonic())
            cluster_redis.start()
            restarted.append(time.monotonic())
        return stopped

    try:
        traffic, stopped_at = run_traffic(cluster, users, outage, lambda t, at: (
            bool(restarted) and time.monotonic() > restarted[0] + 5 and t.steady_since(at, 6)), 120)
    finally:
        if cluster_redis.process is None:
            cluster_redis.start()
    back_at = restarted[0]
    again = traffic.served_again_after(back_at)
    outage = traffic.served_again_after(stopped_at)
    measured("(d) redis-server stopped 8 s and restarted",
             f"served again {again if again is None else round(again, 1)} s after Redis was back "
             f"({outage if outage is None else round(outage, 1)} s after it stopped); {traffic.summary(stopped_at)}")
    assert_clear_and_bounded(traffic, stopped_at)
    # Only a request that ended before redis-server was started again certainly ran without
    # it: one that waited in a queue through the outage may commit in the moments between
    # the new process accepting connections and start() returning, and that is a real write.
    during = [o for o in traffic.outcomes if o.started > stopped_at + 0.5 and o.ended < restarting[0]]
    assert during, "no request ran while Redis was down"
    # Writes and searches need the store. A chat may answer without its memory, by design,
    # but only if it says which stages it went without.
    assert not [o for o in during if o.ok and o.kind in ("write", "search")], "memory answered while Redis was down"
    silent = [o for o in during if o.ok and not o.degraded]
    assert not silent, f"chats answered while Redis was down without naming a degraded stage: {silent}"
    for o in traffic.failures():
        assert o.status == 503 and o.code == "unavailable" and o.retry_after, describe([o], stopped_at)
    assert again is not None and again < 30, "the app did not recover after Redis came back"
    assert {r["replica_id"] for r in cluster.replicas()} == replicas_before, "replicas were restarted"
    check_acknowledged_writes(cluster.url, traffic.acks)
