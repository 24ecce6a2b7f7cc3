"""Stop the vLLM engine's processes when the replica that owns them dies.

vLLM runs its engine core (and, on CPU, a worker) in child processes. When the LLM
replica shuts down cleanly it stops them; when it is killed (`ray stop`, an OOM kill, a
SIGKILL from the controller) nothing tells them, and they keep the model's memory and a
busy core. `watch_children` starts a small watcher in its own session that polls the
replica and, once it is gone, kills the processes it was given.

Run as `python -m serve_app.reaper PARENT_PID PARENT_CTIME PID:CTIME...`; create times
guard against a recycled pid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time

import psutil

logger = logging.getLogger(__name__)

POLL_S = 1.0


def _same(pid: int, create_time: float) -> psutil.Process | None:
    """The process `pid` if it is still the one created at `create_time`."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) < 0.01 and process.status() != psutil.STATUS_ZOMBIE:
            return process
    except psutil.Error:
        pass
    return None


def watch_children(parent_pid: int | None = None) -> subprocess.Popen[bytes] | None:
    """Start a watcher for the current children of `parent_pid` (default: this process).
    Returns None when there is nothing to watch."""
    parent = psutil.Process(parent_pid or os.getpid())
    children = parent.children(recursive=True)
    if not children:
        return None
    args = [sys.executable, "-m", "serve_app.reaper", str(parent.pid), repr(parent.create_time())]
    args += [f"{child.pid}:{child.create_time()!r}" for child in children]
    logger.info("watching %d engine processes of pid %d", len(children), parent.pid)
    return subprocess.Popen(args, start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def reap(parent: tuple[int, float], children: list[tuple[int, float]], poll_s: float = POLL_S) -> int:
    """Wait until the parent is gone (then kill the children) or every child is gone.
    Returns how many children it killed."""
    while True:
        alive = [p for p in (_same(pid, created) for pid, created in children) if p is not None]
        if not alive:
            return 0
        if _same(*parent) is None:
            for process in alive:
                with contextlib.suppress(psutil.Error):
                    process.send_signal(signal.SIGKILL)
            return len(alive)
        time.sleep(poll_s)


def _pair(text: str) -> tuple[int, float]:
    pid, created = text.split(":", 1)
    return int(pid), float(created)


def main(argv: list[str]) -> int:
    parent = (int(argv[0]), float(argv[1]))
    reap(parent, [_pair(arg) for arg in argv[2:]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
