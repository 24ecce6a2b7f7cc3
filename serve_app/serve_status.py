"""Ray Serve's own status, read from the Ray dashboard's REST API, for operators' tools.

`make load` charts replicas over time with it and the live scaling tests assert on it.
Since Ray 2.5x a local `ray.init()` (so `serve run`) turns on token authentication and the
dashboard answers 401 without `Authorization: Bearer <token>`; like Ray's own clients, the
token comes from `RAY_AUTH_TOKEN`, else the file `RAY_AUTH_TOKEN_PATH`, else
`~/.ray/auth_token` (which that local cluster wrote).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
DEFAULT_TOKEN_FILE = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


@dataclass(frozen=True)
class ReplicaCounts:
    """RUNNING replicas and the autoscaler's target, per deployment."""

    running: dict[str, int]
    target: dict[str, int]

    @classmethod
    def of(cls, details: dict[str, Any]) -> ReplicaCounts:
        """From a `ServeInstanceDetails` JSON: `applications` and each app's `deployments`
        are objects keyed by name; a deployment's `replicas` is a list with a `state`.
        Deployments are labelled `app/name` only when more than one application runs."""
        apps: dict[str, Any] = details.get("applications") or {}
        running: dict[str, int] = {}
        target: dict[str, int] = {}
        for app_name, app in apps.items():
            for dep_name, dep in (app.get("deployments") or {}).items():
                label = dep_name if len(apps) == 1 else f"{app_name}/{dep_name}"
                running[label] = sum(1 for r in dep.get("replicas") or [] if r.get("state") == "RUNNING")
                target[label] = int(dep.get("target_num_replicas") or 0)
        return cls(running, target)


def dashboard_headers(token_file: Path = DEFAULT_TOKEN_FILE) -> tuple[dict[str, str], str]:
    """The dashboard's auth header and where its token came from (no header when none is found)."""
    token, source = os.environ.get("RAY_AUTH_TOKEN", "").strip(), "$RAY_AUTH_TOKEN"
    if not token and token_file.is_file():
        token, source = token_file.read_text().strip(), str(token_file)
    if not token:
        return {}, "none"
    return {"Authorization": f"Bearer {token}"}, source


def applications_url(dashboard: str) -> str:
    return dashboard.rstrip("/") + "/api/serve/applications/"  # the trailing slash is required


def fetch_replicas(client: httpx.Client, dashboard: str) -> ReplicaCounts:
    """One read of Serve's status; raises httpx.HTTPError when the dashboard cannot answer."""
    response = client.get(applications_url(dashboard))
    response.raise_for_status()
    return ReplicaCounts.of(response.json())
