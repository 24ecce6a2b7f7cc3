"""Client of the Consolidator deployment."""

from __future__ import annotations

from typing import Any

from serve_app.clients.endpoint import Endpoint


class ConsolidatorClient:
    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    async def run(self, user: str | None) -> dict[str, int]:
        """One consolidation pass now, for one user or everyone; counts per action."""
        totals: dict[str, int] = await self._endpoint.call("run", user)
        return totals

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self._endpoint.call("stats")
        return stats
