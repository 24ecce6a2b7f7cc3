"""The locust load test runs against the live app and nothing in its mix fails."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_locust_mix_runs_without_failures(server: str, tmp_path: Path) -> None:
    prefix = tmp_path / "load"
    run = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "benchmarks/locustfile.py", "--host", server, "--headless",
         "-u", "4", "-r", "4", "-t", "20s", "--csv", str(prefix), "--only-summary"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    with open(f"{prefix}_stats.csv", newline="") as table:
        rows = {row["Name"]: row for row in csv.DictReader(table)}
    assert run.returncode == 0, run.stderr[-3000:]
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    for name in ("/v1/memories [add]", "/v1/chat/completions [stream]", "ttft", "whole stream"):
        assert int(rows[name]["Request Count"]) > 0, sorted(rows)
