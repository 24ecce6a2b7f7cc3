"""A Ray driver of the test cluster that kills replica actors on request, in its own process
(so the test process never becomes a Ray driver).

    python -m tests.cluster.killer GCS_ADDRESS NODE_IP
    stdin:  `resolve NAME...` -> `resolved`     (ray.get_actor of each, in the `serve` namespace)
            `kill`            -> `killed T`     (ray.kill of each resolved actor; T = time.monotonic())
"""

from __future__ import annotations

import logging
import sys
import time

import ray


def main(address: str, node_ip: str) -> int:
    ray.init(address=address, _node_ip_address=node_ip, logging_level=logging.ERROR, log_to_driver=False)
    print("ready", flush=True)
    actors: list[object] = []
    for line in sys.stdin:
        command, *names = line.split()
        if command == "resolve":
            actors = [ray.get_actor(name, namespace="serve") for name in names]
            print("resolved", flush=True)
        elif command == "kill":
            for actor in actors:
                ray.kill(actor, no_restart=True)
            print(f"killed {time.monotonic()!r}", flush=True)
            actors = []
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
