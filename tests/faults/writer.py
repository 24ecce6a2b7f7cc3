"""A client that writes memories in a loop and prints each acknowledged id (one per line,
flushed) before writing the next. Run by the kill -9 fault tests."""

from __future__ import annotations

import sys

import numpy as np

from serve_app.core.store import NewMemory
from serve_app.core.stores import open_store


def main() -> None:
    backend, target = sys.argv[1], sys.argv[2]
    prefix = sys.argv[3] if len(sys.argv) > 3 else "memserve"
    store = open_store(backend, sqlite_path=target, redis_url=target, redis_prefix=prefix)
    rng = np.random.default_rng(0)
    i = 0
    while True:
        vector = rng.standard_normal(8).astype(np.float32)
        try:
            records, seq = store.add("writer", 0, [NewMemory(text=f"memory {i}", tier="long_term", importance=0.5,
                                                             embedding=vector / np.linalg.norm(vector))])
        except Exception as exc:  # the store died under us: report and stop
            print(f"ERROR {exc!r}", flush=True)
            return
        print(f"ACK {records[0].id} {seq}", flush=True)
        i += 1


if __name__ == "__main__":
    main()
