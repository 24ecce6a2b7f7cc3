"""On-disk snapshots of one user's index, with the log position they cover.

A snapshot only saves rebuild time: it is trusted only if its checksum, user and
store id all match; anything else (missing, truncated, corrupt, from another data set)
is ignored and the index is rebuilt from the store. Files are written to a temporary
name, fsynced and renamed, so a crash never leaves a half-written snapshot in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

logger = logging.getLogger(__name__)

MAGIC = b"MEMSERVE-SNAPSHOT-1\n"


@dataclass
class Snapshot:
    seq: int
    index: faiss.Index
    texts: dict[int, str]


def snapshot_path(directory: Path, user: str) -> Path:
    return directory / f"{hashlib.blake2b(user.encode(), digest_size=16).hexdigest()}.snap"


def write_snapshot(path: Path, user: str, seq: int, store_id: str, index: faiss.Index, texts: dict[int, str]) -> None:
    index_bytes = faiss.serialize_index(index).tobytes()
    texts_bytes = json.dumps({str(k): v for k, v in texts.items()}).encode()
    header = {
        "user": user, "seq": seq, "store_id": store_id, "index_len": len(index_bytes),
        "sha256": hashlib.sha256(index_bytes + texts_bytes).hexdigest(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    with tmp.open("wb") as f:
        f.write(MAGIC + json.dumps(header).encode() + b"\n" + index_bytes + texts_bytes)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def read_snapshot(path: Path, user: str, store_id: str) -> Snapshot | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        if not data.startswith(MAGIC):
            raise ValueError("bad magic")
        header_end = data.index(b"\n", len(MAGIC))
        header = json.loads(data[len(MAGIC):header_end])
        body = data[header_end + 1:]
        if hashlib.sha256(body).hexdigest() != header["sha256"]:
            raise ValueError("checksum mismatch")
        if header["user"] != user or header["store_id"] != store_id:
            raise ValueError("snapshot of another user or data set")
        split = header["index_len"]
        index = faiss.deserialize_index(np.frombuffer(body[:split], dtype=np.uint8))
        texts = {int(k): v for k, v in json.loads(body[split:]).items()}
        return Snapshot(seq=int(header["seq"]), index=index, texts=texts)
    except Exception as exc:  # any defect means "rebuild from the store"
        logger.warning("ignoring snapshot %s: %s", path, exc)
        return None


def remove_snapshot(path: Path) -> None:
    path.unlink(missing_ok=True)
