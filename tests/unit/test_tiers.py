"""One tier registry from settings: a tier configured in YAML is usable everywhere, an
unknown one is the caller's 400 (never a 500), and promotion/decay follow the policies."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve_app.core.tiers import TierPolicy, TierRegistry, UnknownTier, default_tier_policies
from serve_app.settings import AppSettings, MemorySettings
from tests.fakes import FakeGraph
from tests.unit.conftest import app_over


def test_a_tier_added_in_settings_is_accepted_by_every_endpoint(settings: AppSettings, graph: FakeGraph) -> None:
    settings.memory.tiers = {**default_tier_policies(), "project": TierPolicy(cap=3, ttl_s=None)}
    with app_over(settings, graph) as client:
        added = client.post("/v1/memories", json={"user": "ann", "text": "the repo is memserve", "tier": "project"})
        assert added.status_code == 200, added.text
        listed = client.get("/v1/memories", params={"user": "ann", "tier": "project"}).json()["data"]
        assert [m["tier"] for m in listed] == ["project"]
        found = client.post("/v1/memories/search", json={"user": "ann", "query": "repo", "tiers": ["project"]})
        assert [r["tier"] for r in found.json()["results"]] == ["project"]
        stats = client.get("/v1/memories/stats", params={"user": "ann"}).json()
        assert stats["tiers"]["project"] == {"count": 1, "cap": 3, "ttl_s": None}


def test_a_tier_the_server_does_not_have_is_a_400_everywhere(settings: AppSettings, graph: FakeGraph) -> None:
    settings.memory.tiers = {k: v for k, v in default_tier_policies().items() if k != "episodic"}
    settings.memory.tiers["long_term"] = TierPolicy(cap=100, ttl_s=None)  # promoted to nowhere removed
    with app_over(settings, graph) as client:
        calls = [
            client.post("/v1/memories", json={"user": "ann", "text": "x", "tier": "episodic"}),
            client.post("/v1/memories", json={"user": "ann", "memories": [{"text": "y", "tier": "nope"}]}),
            client.get("/v1/memories", params={"user": "ann", "tier": "episodic"}),
            client.post("/v1/memories/search", json={"user": "ann", "query": "x", "tiers": ["episodic"]}),
            client.post("/v1/chat/completions", json={"model": "smollm2-135m-instruct", "user": "ann",
                                                      "messages": [{"role": "user", "content": "hi"}],
                                                      "memserve": {"tiers": ["episodic"]}}),
        ]
        for response in calls:
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["param"] == "tier" and "working" in error["message"]
        assert client.get("/v1/memories", params={"user": "ann"}).json()["data"] == []  # nothing was written


def test_default_tier_comes_from_settings(settings: AppSettings, graph: FakeGraph) -> None:
    settings.memory.default_tier = "semantic"
    with app_over(settings, graph) as client:
        client.post("/v1/memories", json={"user": "ann", "text": "water boils at 100 C"})
        assert [m["tier"] for m in client.get("/v1/memories", params={"user": "ann"}).json()["data"]] == ["semantic"]


def test_settings_refuse_tiers_that_do_not_fit_together() -> None:
    with pytest.raises(ValidationError, match="promotes to"):
        MemorySettings(tiers={"a": TierPolicy(cap=1, promote_to="b")}, default_tier="a", write_back_tier="a")
    with pytest.raises(ValidationError, match="unknown tier"):
        MemorySettings(tiers={"a": TierPolicy(cap=1)}, default_tier="a", write_back_tier="short_term")


def test_registry_answers_for_unconfigured_tiers_without_raising() -> None:
    """Memories of a tier removed from the config stay readable: never promoted, evicted or decayed."""
    registry = TierRegistry(default_tier_policies())
    assert registry.promotion_target("working") == "short_term" and registry.decays("episodic")
    assert registry.promotion_target("gone") is None and registry.cap("gone") is None and not registry.decays("gone")
    with pytest.raises(UnknownTier):
        registry.check("gone")
