"""The engine-process watcher, with real processes: a killed parent takes its children along."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]

PARENT = """
import subprocess, sys, time
from serve_app.reaper import watch_children
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep({child_s})"])
watcher = watch_children()
print(child.pid, watcher.pid, flush=True)
time.sleep(120)
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.1)
    return False


def start_parent(child_s: float) -> tuple[subprocess.Popen[str], int, int]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(child_s=child_s)], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert parent.stdout is not None
    child, watcher = map(int, parent.stdout.readline().split())
    return parent, child, watcher


def test_children_of_a_killed_parent_are_killed() -> None:
    parent, child, watcher = start_parent(child_s=120)
    try:
        time.sleep(1.5)
        assert not gone(child)  # the watcher leaves a living parent's children alone
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert wait_gone(child) and wait_gone(watcher)
    finally:
        for pid in (child, watcher):
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_watcher_exits_when_the_children_finish() -> None:
    parent, child, watcher = start_parent(child_s=0.5)
    try:
        assert wait_gone(child) and wait_gone(watcher)
        assert parent.poll() is None  # and the parent was not touched
    finally:
        parent.kill()
        parent.wait()
