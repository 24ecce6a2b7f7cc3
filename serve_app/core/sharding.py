"""Which shard owns a namespace: one stable hash shared by every writer and reader."""

from __future__ import annotations

import hashlib


def shard_for(namespace: str, num_shards: int) -> int:
    """Stable across processes and machines (unlike `hash()`): every replica, the store's
    writers and the VectorSearch shards must agree on it forever."""
    digest = hashlib.blake2b(namespace.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_shards
