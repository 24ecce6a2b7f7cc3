"""Cluster MemoryStore on Redis.

Every write is one Lua script, so allocating its `seq`, changing the data, appending to
the change log and recording history happen atomically and in seq order (a reader that
has seen seq N has seen every write below N). Durability is Redis's: run it with
`appendonly yes` and `appendfsync always` for the store's "acknowledged means
committed" promise (the test fixtures and the Helm values do).

Layout under `prefix`: `:m:<key>` hash per memory, `:id:<id>` -> key, `:u:<user>` zset
of keys, `:users` set, `:log:<shard>` and `:ulog:<user>` zsets scored by seq,
`:h:<user>:<id>` list of history events, counters `:seq` and `:keyctr`. Key-value spaces:
`:kv:<space>` hash key -> value, and `:kvver` hash space -> version (never deleted, so a
version persists with the data and never goes backwards); their scripts touch nothing else.

Event time and connections: a memory's hash also holds `occurred_at`, `session` and
`index_text` (empty when it is indexed by its text); `:s:<len(user)>:<user>:<session>` is a
zset of a session's keys (the length keeps user "a:b" + session "c" apart from user "a" +
session "b:c"); `:ln:<key>` hashes a memory's related keys -> kind, kept both ways. Hashes
written before these fields existed read as occurred = created, no session, no links.
"""

from __future__ import annotations

import builtins
import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import redis

from serve_app.core.store import (
    Change,
    ChangeOp,
    ConnectionKind,
    HistoryEvent,
    HistoryEventKind,
    MemoryPatch,
    MemoryRecord,
    NewMemory,
    as_blob,
    empty_index_data,
    from_blob,
)

_LOG = """
local function log(p, shard, user, op, key, seq)
  redis.call('ZADD', p..':log:'..shard, seq, seq..'|'..op..'|'..key..'|'..user)
  redis.call('ZADD', p..':ulog:'..user, seq, seq..'|'..op..'|'..key..'|'..shard)
end
local function session_set(p, user, session)
  return p..':s:'..#user..':'..user..':'..session
end
local function unlink(p, user, key)
  local h = p..':m:'..key
  local session = redis.call('HGET', h, 'session')
  if session and session ~= '' then redis.call('ZREM', session_set(p, user, session), key) end
  for _, other in ipairs(redis.call('HKEYS', p..':ln:'..key)) do redis.call('HDEL', p..':ln:'..other, key) end
  redis.call('DEL', p..':ln:'..key)
end
"""

_ADD = _LOG + """
local p, user, shard, now, actor, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local out, seq = {}, 0
for i = 0, n - 1 do
  local b = 7 + i * 11
  local id, text, tier, imp, meta, emb, exp = ARGV[b], ARGV[b+1], ARGV[b+2], ARGV[b+3], ARGV[b+4], ARGV[b+5], ARGV[b+6]
  local occurred, session, itext, related = ARGV[b+7], ARGV[b+8], ARGV[b+9], ARGV[b+10]
  local key = redis.call('INCR', p..':keyctr')
  redis.call('HSET', p..':m:'..key, 'id', id, 'user', user, 'shard', shard, 'text', text, 'tier', tier,
    'importance', imp, 'metadata', meta, 'embedding', emb, 'created_at', now, 'updated_at', now,
    'expires_at', exp, 'access_count', 0, 'last_accessed', '', 'occurred_at', occurred, 'session', session,
    'index_text', itext)
  redis.call('SET', p..':id:'..id, key)
  redis.call('ZADD', p..':u:'..user, key, key)
  redis.call('SADD', p..':users', user)
  if session ~= '' then redis.call('ZADD', session_set(p, user, session), key, key) end
  for _, ref in ipairs(cjson.decode(related)) do
    -- a string is an existing key; a number the position of an earlier item of this call
    local other = ref
    if type(ref) == 'number' then other = out[ref + 1] end
    if other and tostring(other) ~= tostring(key) and redis.call('HGET', p..':m:'..other, 'user') == user then
      redis.call('HSET', p..':ln:'..key, other, 'related')
      redis.call('HSET', p..':ln:'..other, key, 'related')
    end
  end
  seq = redis.call('INCR', p..':seq')
  log(p, shard, user, 'upsert', key, seq)
  redis.call('RPUSH', p..':h:'..user..':'..id, cjson.encode({event='ADD', new_text=text, new_tier=tier,
    actor=actor, at=now, seq=seq, occurred_at=occurred}))
  out[#out + 1] = key
end
out[#out + 1] = seq
return out
"""

_UPDATE = _LOG + """
local p, user, shard, now, actor, event = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local out, seq = {}, 0
for i = 7, #ARGV, 3 do
  local id, fields, emb = ARGV[i], ARGV[i+1], ARGV[i+2]
  local key = redis.call('GET', p..':id:'..id)
  local h = key and (p..':m:'..key)
  if key and redis.call('HGET', h, 'user') == user then
    local old_text, old_tier = redis.call('HGET', h, 'text'), redis.call('HGET', h, 'tier')
    for name, value in pairs(cjson.decode(fields)) do redis.call('HSET', h, name, value) end
    if emb ~= '' then redis.call('HSET', h, 'embedding', emb) end
    redis.call('HSET', h, 'updated_at', now)
    seq = redis.call('INCR', p..':seq')
    log(p, shard, user, 'upsert', key, seq)
    redis.call('RPUSH', p..':h:'..user..':'..id, cjson.encode({event=event, old_text=old_text, old_tier=old_tier,
      new_text=redis.call('HGET', h, 'text'), new_tier=redis.call('HGET', h, 'tier'), actor=actor, at=now, seq=seq,
      occurred_at=redis.call('HGET', h, 'occurred_at') or redis.call('HGET', h, 'created_at')}))
    out[#out + 1] = tonumber(key)
  end
end
out[#out + 1] = seq
return out
"""

_DELETE = _LOG + """
local p, user, shard, now, actor, event = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local seq = false
for i = 7, #ARGV do
  local id = ARGV[i]
  local key = redis.call('GET', p..':id:'..id)
  if key and redis.call('HGET', p..':m:'..key, 'user') == user then
    local h = p..':m:'..key
    local old_text, old_tier = redis.call('HGET', h, 'text'), redis.call('HGET', h, 'tier')
    local occurred = redis.call('HGET', h, 'occurred_at') or redis.call('HGET', h, 'created_at')
    unlink(p, user, key)
    redis.call('DEL', h, p..':id:'..id)
    redis.call('ZREM', p..':u:'..user, key)
    seq = redis.call('INCR', p..':seq')
    log(p, shard, user, 'delete', key, seq)
    redis.call('RPUSH', p..':h:'..user..':'..id, cjson.encode({event=event, old_text=old_text,
      old_tier=old_tier, actor=actor, at=now, seq=seq, occurred_at=occurred}))
  end
end
return seq
"""

_FORGET = _LOG + """
local p, user, shard = ARGV[1], ARGV[2], ARGV[3]
for _, key in ipairs(redis.call('ZRANGE', p..':u:'..user, 0, -1)) do
  local id = redis.call('HGET', p..':m:'..key, 'id')
  unlink(p, user, key)
  redis.call('DEL', p..':m:'..key, p..':id:'..id)
end
for _, entry in ipairs(redis.call('ZRANGE', p..':ulog:'..user, 0, -1)) do
  local seq, op, key, s = string.match(entry, '^(%d+)|(%a+)|(%d+)|(%d+)$')
  redis.call('ZREM', p..':log:'..s, seq..'|'..op..'|'..key..'|'..user)
end
local cursor = '0'
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', p..':h:'..user..':*', 'COUNT', 1000)
  cursor = page[1]
  for _, name in ipairs(page[2]) do redis.call('DEL', name) end
until cursor == '0'
redis.call('DEL', p..':u:'..user, p..':ulog:'..user)
redis.call('SREM', p..':users', user)
local seq = redis.call('INCR', p..':seq')
log(p, shard, user, 'forget', 0, seq)
return seq
"""

_KV_PUT = """
local p, space = ARGV[1], ARGV[2]
redis.call('HSET', p..':kv:'..space, ARGV[3], ARGV[4])
return redis.call('HINCRBY', p..':kvver', space, 1)
"""

_KV_DELETE = """
local p, space = ARGV[1], ARGV[2]
local removed = 0
for i = 3, #ARGV do removed = removed + redis.call('HDEL', p..':kv:'..space, ARGV[i]) end
if removed > 0 then return redis.call('HINCRBY', p..':kvver', space, 1) end
return tonumber(redis.call('HGET', p..':kvver', space) or '0')
"""

_KV_REPLACE = """
local p, space = ARGV[1], ARGV[2]
local h = p..':kv:'..space
redis.call('DEL', h)
for i = 3, #ARGV, 2 do redis.call('HSET', h, ARGV[i], ARGV[i+1]) end
return redis.call('HINCRBY', p..':kvver', space, 1)
"""


def _s(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _opt_float(value: bytes | None) -> float | None:
    return float(value) if value not in (None, b"") else None


def _record(key: int, h: dict[bytes, bytes]) -> MemoryRecord:
    created = float(h[b"created_at"])
    occurred = _opt_float(h.get(b"occurred_at"))
    return MemoryRecord(
        key=key, id=h[b"id"].decode(), user=h[b"user"].decode(), text=h[b"text"].decode(),
        tier=h[b"tier"].decode(), importance=float(h[b"importance"]), metadata=json.loads(h[b"metadata"]),
        created_at=created, updated_at=float(h[b"updated_at"]),
        expires_at=_opt_float(h.get(b"expires_at")), access_count=int(h[b"access_count"]),
        last_accessed=_opt_float(h.get(b"last_accessed")), occurred_at=created if occurred is None else occurred,
        session=h.get(b"session", b"").decode() or None,
    )


def _index_text(text: bytes | None, index_text: bytes | None) -> str | None:
    """What a memory is indexed by: its index text if it has one, else its text."""
    return _s(index_text) or _s(text)


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _patch_fields(patch: MemoryPatch) -> dict[str, str]:
    """Hash fields to set, all as strings (Lua would round numbers to 14 digits)."""
    fields: dict[str, str] = {}
    if patch.text is not None:
        fields["text"] = patch.text
        fields["index_text"] = patch.index_text or ""
    if patch.occurred_at is not None:
        fields["occurred_at"] = repr(float(patch.occurred_at))
    if patch.importance is not None:
        fields["importance"] = repr(float(patch.importance))
    if patch.metadata is not None:
        fields["metadata"] = json.dumps(patch.metadata)
    if patch.tier is not None:
        fields["tier"] = patch.tier
        fields["expires_at"] = _num(patch.expires_at)
    return fields


class RedisMemoryStore:
    # The client is opened without decode_responses, so its replies are bytes; redis-py
    # types them bytes | str (either mode) and the casts below narrow them to bytes.
    def __init__(self, url: str, prefix: str = "memserve", timeout_s: float = 5.0) -> None:
        # A write whose reply timed out may still have been applied: the caller is told so
        # (a 503 to retry) and a retried exact repeat is a NOOP.
        self.r = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.p = prefix
        self._add = self.r.register_script(_ADD)
        self._update = self.r.register_script(_UPDATE)
        self._delete = self.r.register_script(_DELETE)
        self._forget = self.r.register_script(_FORGET)
        self._kv_put = self.r.register_script(_KV_PUT)
        self._kv_delete = self.r.register_script(_KV_DELETE)
        self._kv_replace = self.r.register_script(_KV_REPLACE)
        self.r.setnx(f"{prefix}:store_id", uuid.uuid4().hex)
        self.store_id: str = cast(bytes, self.r.get(f"{prefix}:store_id")).decode()  # set just above

    # ------------------------------------------------------------------ writes

    def add(
        self, user: str, shard: int, items: Sequence[NewMemory], actor: str = "api"
    ) -> tuple[list[MemoryRecord], int]:
        now = time.time()
        ids = [f"mem-{uuid.uuid4().hex}" for _ in items]
        args: list[Any] = [self.p, user, shard, repr(now), actor, len(items)]
        for mid, item in zip(ids, items, strict=True):
            # Existing keys travel as strings, positions of earlier items as numbers.
            related = [str(k) for k in item.related] + [i for i in item.related_items if 0 <= i < len(items)]
            args += [mid, item.text, item.tier, repr(item.importance), json.dumps(item.metadata),
                     as_blob(item.embedding), _num(item.expires_at), _num(item.occurred_at or now),
                     item.session or "", item.index_text or "", json.dumps(related)]
        *keys, seq = self._add(args=args)
        records = [
            MemoryRecord(key=int(k), id=mid, user=user, text=item.text, tier=item.tier, importance=item.importance,
                         metadata=dict(item.metadata), created_at=now, updated_at=now, expires_at=item.expires_at,
                         access_count=0, last_accessed=None,
                         occurred_at=now if item.occurred_at is None else item.occurred_at, session=item.session)
            for k, mid, item in zip(keys, ids, items, strict=True)  # the script returns one key per item
        ]
        return records, int(seq)

    def update(
        self, user: str, shard: int, patches: Sequence[tuple[str, MemoryPatch]], actor: str = "api",
        event: HistoryEventKind = "UPDATE",
    ) -> tuple[list[MemoryRecord], int]:
        args: list[Any] = [self.p, user, shard, repr(time.time()), actor, event]
        for memory_id, patch in patches:
            args += [memory_id, json.dumps(_patch_fields(patch)) or "{}",
                     b"" if patch.embedding is None else as_blob(patch.embedding)]
        *keys, seq = self._update(args=args)
        return self._load([int(k) for k in keys]), int(seq)

    def delete(
        self, user: str, shard: int, memory_ids: Sequence[str], actor: str = "api", event: HistoryEventKind = "DELETE"
    ) -> int | None:
        seq = self._delete(args=[self.p, user, shard, repr(time.time()), actor, event, *memory_ids])
        return int(seq) if seq else None

    def forget_user(self, user: str, shard: int) -> int:
        return int(self._forget(args=[self.p, user, shard]))

    def record_access(self, user: str, keys: Sequence[int], now: float) -> None:
        owned = [k for k in keys if self.r.hget(f"{self.p}:m:{k}", "user") == user.encode()]
        with self.r.pipeline(transaction=False) as pipe:
            for k in owned:
                pipe.hincrby(f"{self.p}:m:{k}", "access_count", 1)
                pipe.hset(f"{self.p}:m:{k}", "last_accessed", repr(now))
            pipe.execute()

    def kv_put(self, space: str, key: str, value: str) -> int:
        """One script: the value and the version bump commit together."""
        return int(self._kv_put(args=[self.p, space, key, value]))

    def kv_delete(self, space: str, keys: Sequence[str]) -> int:
        """Bumps the version only if a key was removed: unchanged contents keep theirs."""
        return int(self._kv_delete(args=[self.p, space, *keys]))

    def kv_replace(self, space: str, items: Mapping[str, str]) -> int:
        """One script, so no reader sees the space half replaced."""
        return int(self._kv_replace(args=[self.p, space, *(x for kv in items.items() for x in kv)]))

    # ------------------------------------------------------------------ reads

    def kv_get(self, space: str, key: str) -> str | None:
        return _s(cast("bytes | None", self.r.hget(f"{self.p}:kv:{space}", key)))

    def kv_items(self, space: str) -> dict[str, str]:
        raw = cast(dict[bytes, bytes], self.r.hgetall(f"{self.p}:kv:{space}"))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def kv_version(self, space: str) -> int:
        return int(self.r.hget(f"{self.p}:kvver", space) or 0)

    def _load(self, keys: Sequence[int]) -> list[MemoryRecord]:
        with self.r.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hgetall(f"{self.p}:m:{k}")
            hashes = pipe.execute()
        return [_record(int(k), h) for k, h in zip(keys, hashes, strict=True) if h]

    def get(self, user: str, memory_id: str) -> MemoryRecord | None:
        key = self.r.get(f"{self.p}:id:{memory_id}")
        if key is None:
            return None
        found = self._load([int(key)])
        return found[0] if found and found[0].user == user else None

    def get_many(self, user: str, keys: Iterable[int]) -> dict[int, MemoryRecord]:
        return {r.key: r for r in self._load(list(keys)) if r.user == user}

    def _user_keys(self, user: str, after_key: int = 0, limit: int | None = None) -> list[int]:
        raw = cast(list[bytes], self.r.zrangebyscore(f"{self.p}:u:{user}", f"({after_key}", "+inf",
                                                     start=0 if limit else None, num=limit))
        return [int(k) for k in raw]

    # `list` names this method in the class body: signatures below it say builtins.list.
    def list(self, user: str, tier: str | None, limit: int, after_key: int | None) -> list[MemoryRecord]:
        out: list[MemoryRecord] = []
        cursor = after_key or 0
        while len(out) < limit:
            keys = self._user_keys(user, cursor, max(limit, 100))
            if not keys:
                break
            out += [r for r in self._load(keys) if tier is None or r.tier == tier]
            cursor = keys[-1]
        return out[:limit]

    def all_records(self, user: str) -> builtins.list[MemoryRecord]:
        return self._load(self._user_keys(user))

    def user_index_data(self, user: str) -> tuple[np.ndarray, np.ndarray, builtins.list[str]]:
        keys = self._user_keys(user)
        if not keys:
            return empty_index_data()
        with self.r.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hmget(f"{self.p}:m:{k}", "embedding", "text", "index_text")
            rows = pipe.execute()
        found = [(k, blob, _index_text(text, itext)) for k, (blob, text, itext) in zip(keys, rows, strict=True)
                 if blob is not None]
        return (np.array([k for k, _, _ in found], dtype=np.int64), np.stack([from_blob(b) for _, b, _ in found]),
                [t or "" for _, _, t in found])

    def count(self, user: str) -> int:
        return int(self.r.zcard(f"{self.p}:u:{user}"))

    def tier_counts(self, user: str) -> dict[str, int]:
        keys = self._user_keys(user)
        with self.r.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hget(f"{self.p}:m:{k}", "tier")
            tiers = pipe.execute()
        counts: dict[str, int] = {}
        for tier in tiers:
            if tier is not None:
                counts[tier.decode()] = counts.get(tier.decode(), 0) + 1
        return counts

    def history(self, user: str, memory_id: str) -> builtins.list[HistoryEvent]:
        events = [json.loads(e) for e in self.r.lrange(f"{self.p}:h:{user}:{memory_id}", 0, -1)]
        return [
            HistoryEvent(memory_id=memory_id, event=e["event"], old_text=e.get("old_text"), new_text=e.get("new_text"),
                         old_tier=e.get("old_tier"), new_tier=e.get("new_tier"), actor=e["actor"],
                         at=float(e["at"]), seq=int(e["seq"]),
                         occurred_at=float(e["occurred_at"]) if e.get("occurred_at") else None)
            for e in events
        ]

    def users(self) -> builtins.list[str]:
        return sorted(u.decode() for u in cast(set[bytes], self.r.smembers(f"{self.p}:users")))

    def _changes(self, log: str, seq: int, limit: int | None, user: str | None) -> builtins.list[Change]:
        entries = cast(list[bytes], self.r.zrangebyscore(log, f"({seq}", "+inf", start=0 if limit else None, num=limit))
        parsed: builtins.list[tuple[int, ChangeOp, int, str]] = []
        for entry in entries:
            s, op, key, last = entry.decode().split("|", 3)
            # The scripts log only ChangeOp names.
            parsed.append((int(s), cast(ChangeOp, op), int(key), user if user is not None else last))
        with self.r.pipeline(transaction=False) as pipe:
            for _, _, k, _ in parsed:
                pipe.hmget(f"{self.p}:m:{k}", "embedding", "text", "index_text")
            rows = pipe.execute()
        return [
            Change(seq=s, user=u, op=op, key=k,
                   embedding=None if blob is None or op != "upsert" else from_blob(blob), text=_index_text(text, itext))
            for (s, op, k, u), (blob, text, itext) in zip(parsed, rows, strict=True)
        ]

    def changes_since(self, shard: int, seq: int, limit: int = 10_000) -> builtins.list[Change]:
        return self._changes(f"{self.p}:log:{shard}", seq, limit, None)

    def user_changes_since(self, user: str, seq: int) -> builtins.list[Change]:
        return self._changes(f"{self.p}:ulog:{user}", seq, None, user)

    def last_seq(self, shard: int | None = None) -> int:
        if shard is None:
            return int(self.r.get(f"{self.p}:seq") or 0)
        return self._top(f"{self.p}:log:{shard}")

    def user_version(self, user: str) -> int:
        return self._top(f"{self.p}:ulog:{user}")

    def _top(self, zset: str) -> int:
        top = self.r.zrevrange(zset, 0, 0, withscores=True)
        return int(top[0][1]) if top else 0

    def _session_set(self, user: str, session: str) -> str:
        return f"{self.p}:s:{len(user)}:{user}:{session}"

    def session_turn_before(self, user: str, session: str, before_key: int | None) -> MemoryRecord | None:
        top = "+inf" if before_key is None else f"({before_key}"
        keys = cast(list[bytes], self.r.zrevrangebyscore(self._session_set(user, session), top, "-inf", start=0, num=1))
        found = self._load([int(k) for k in keys])
        return found[0] if found and found[0].user == user else None

    def connections(self, user: str, keys: Sequence[int]) -> dict[int, builtins.list[tuple[int, ConnectionKind]]]:
        records = [r for r in self._load(list(keys)) if r.user == user]
        with self.r.pipeline(transaction=False) as pipe:
            for r in records:
                zset = self._session_set(user, r.session or "")
                pipe.zrevrangebyscore(zset, f"({r.key}", "-inf", start=0, num=1)
                pipe.zrangebyscore(zset, f"({r.key}", "+inf", start=0, num=1)
                pipe.hkeys(f"{self.p}:ln:{r.key}")
            replies = pipe.execute()
        found: dict[int, builtins.list[tuple[int, ConnectionKind]]] = {}
        for i, r in enumerate(records):
            before, after, related = replies[3 * i: 3 * i + 3]
            linked: builtins.list[tuple[int, ConnectionKind]] = []
            if r.session:
                linked += [(int(k), "session") for k in (*before, *after)]
            linked += [(int(k), "related") for k in sorted(related, key=int)]
            found[r.key] = linked
        return found

    def close(self) -> None:
        self.r.close()
