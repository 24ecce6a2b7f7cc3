"""The key-value part of the MemoryStore contract, on both backends (a SQLite file and a
real Redis), with the same fixtures as the memory contract suite."""

from __future__ import annotations

import threading

from serve_app.core.store import MemoryStore
from tests.unit.test_store import StoreFactory, make_store, mem, store  # noqa: F401  # fixtures, used by name in signatures


def test_put_get_roundtrip_and_missing_keys(store: MemoryStore) -> None:
    value = '{"name": "caf\\u00e9 \u2615", "n": [1, 2.5, null]}'
    store.kv_put("jobs", "job-1", value)
    assert store.kv_get("jobs", "job-1") == value
    assert store.kv_get("jobs", "job-2") is None and store.kv_get("other", "job-1") is None
    store.kv_put("jobs", "job-1", '"overwritten"')
    assert store.kv_get("jobs", "job-1") == '"overwritten"'


def test_items_lists_the_whole_space(store: MemoryStore) -> None:
    assert store.kv_items("jobs") == {}
    store.kv_put("jobs", "a", "1")
    store.kv_put("jobs", "b:with:colons", "2")
    assert store.kv_items("jobs") == {"a": "1", "b:with:colons": "2"}


def test_delete_bumps_the_version_only_when_something_goes(store: MemoryStore) -> None:
    store.kv_put("jobs", "a", "1")
    v = store.kv_put("jobs", "b", "2")
    assert store.kv_delete("jobs", ["a", "missing"]) == v + 1
    assert store.kv_items("jobs") == {"b": "2"}
    assert store.kv_delete("jobs", ["missing"]) == v + 1 == store.kv_version("jobs")
    assert store.kv_delete("jobs", []) == v + 1
    assert store.kv_delete("never-written", ["x"]) == 0


def test_replace_swaps_the_whole_space(store: MemoryStore) -> None:
    store.kv_put("catalog", "old", "1")
    v = store.kv_put("catalog", "kept", "2")
    assert store.kv_replace("catalog", {"kept": "3", "new": "4"}) == v + 1
    assert store.kv_items("catalog") == {"kept": "3", "new": "4"}
    assert store.kv_replace("catalog", {}) == v + 2
    assert store.kv_items("catalog") == {} and store.kv_version("catalog") == v + 2


def test_replace_is_atomic_for_readers(store: MemoryStore) -> None:
    """A reader never sees a mix of two generations (nor an empty space in between)."""
    generations = [{f"k{i}": f"gen{g}" for i in range(50)} for g in range(20)]
    store.kv_replace("catalog", generations[0])
    seen: list[dict[str, str]] = []
    writer = threading.Thread(target=lambda: [store.kv_replace("catalog", g) for g in generations[1:]])
    writer.start()
    while writer.is_alive():
        seen.append(store.kv_items("catalog"))
    writer.join()
    assert all(items in generations for items in seen)


def test_versions_increase_and_survive_reopening(make_store: StoreFactory) -> None:
    first = make_store()
    assert first.kv_version("jobs") == 0
    versions = [first.kv_put("jobs", "a", "1"), first.kv_put("jobs", "b", "2"),
                first.kv_delete("jobs", ["a"]), first.kv_replace("jobs", {"c": "3"})]
    assert versions == sorted(set(versions)) and versions[0] > 0
    assert first.kv_version("jobs") == versions[-1]
    store_id = first.store_id
    first.close()
    reopened = make_store()
    assert reopened.store_id == store_id
    assert reopened.kv_version("jobs") == versions[-1] and reopened.kv_items("jobs") == {"c": "3"}
    assert reopened.kv_put("jobs", "d", "4") == versions[-1] + 1


def test_emptied_space_keeps_its_version(make_store: StoreFactory) -> None:
    """Emptying a space must not reset its version, or old contents could share one."""
    first = make_store()
    first.kv_put("docs", "a", "1")
    v = first.kv_delete("docs", ["a"])
    first.close()
    reopened = make_store()
    assert reopened.kv_version("docs") == v and reopened.kv_put("docs", "a", "2") == v + 1


def test_spaces_are_independent(store: MemoryStore) -> None:
    store.kv_put("jobs", "same-key", "job")
    store.kv_put("jobs", "other", "x")
    store.kv_put("docs", "same-key", "doc")
    assert store.kv_version("jobs") == 2 and store.kv_version("docs") == 1
    store.kv_replace("docs", {})
    store.kv_delete("jobs", ["other"])
    assert store.kv_items("jobs") == {"same-key": "job"} and store.kv_items("docs") == {}
    assert store.kv_version("jobs") == 3 and store.kv_version("docs") == 2


def test_kv_writes_stay_out_of_memories_and_logs(store: MemoryStore) -> None:
    _, seq = store.add("alice", 0, [mem("a memory", 1)])
    store.kv_put("jobs", "alice", "{}")
    store.kv_replace("docs", {"d": "{}"})
    store.kv_delete("jobs", ["alice"])
    assert store.users() == ["alice"] and store.last_seq() == seq and store.last_seq(0) == seq
    assert [c.seq for c in store.changes_since(0, 0)] == [seq] and store.changes_since(1, 0) == []
    assert store.user_version("alice") == seq and store.user_version("jobs") == 0


def test_forget_user_leaves_kv_alone(store: MemoryStore) -> None:
    store.add("jobs", 0, [mem("a user who happens to share a space's name", 1)])
    version = store.kv_put("jobs", "jobs", "kept")
    store.forget_user("jobs", 0)
    assert store.kv_items("jobs") == {"jobs": "kept"} and store.kv_version("jobs") == version


def test_concurrent_writers_never_share_a_version(make_store: StoreFactory) -> None:
    """Four writers, each its own connection (as separate processes would be)."""
    stores = [make_store() for _ in range(4)]
    results: list[list[int]] = [[] for _ in stores]

    def write(i: int) -> None:
        results[i] += [stores[i].kv_put("jobs", f"w{i}-{n}", str(n)) for n in range(50)]

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == sorted(r) for r in results)  # each writer sees its versions increase
    assert sorted(v for r in results for v in r) == list(range(1, 201))
    assert stores[0].kv_version("jobs") == 200 and len(stores[0].kv_items("jobs")) == 200
