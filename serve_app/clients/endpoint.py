"""The one narrow seam between a client and the deployment it talks to.

A client calls a method of its deployment by name through an `Endpoint`. Over Ray it is a
`HandleEndpoint` around a `DeploymentHandle`; in unit tests a `LocalEndpoint` around the
very object the deployment would host (an `InProcessCache`, a `ShardSearcher`, ...) or a
fake of it. So each typed client is written once and tested without Ray, the way httpx
plugs transports in under one client.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any, Protocol


class Endpoint(Protocol):
    async def call(self, method: str, *args: Any) -> Any:
        """Call `method` on the deployment and return its result."""
        ...

    def stream(self, method: str, *args: Any) -> AsyncIterator[Any]:
        """Call a generator method and iterate over what it yields."""
        ...


class HandleEndpoint:
    """An endpoint over a Ray Serve `DeploymentHandle` (Ray is imported by the caller)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._streaming = handle.options(stream=True)

    async def call(self, method: str, *args: Any) -> Any:
        return await getattr(self._handle, method).remote(*args)

    def stream(self, method: str, *args: Any) -> AsyncIterator[Any]:
        response: AsyncIterator[Any] = getattr(self._streaming, method).remote(*args)
        return response


class LocalEndpoint:
    """An endpoint over an object in this process: sync or async methods alike."""

    def __init__(self, target: object) -> None:
        self.target = target

    async def call(self, method: str, *args: Any) -> Any:
        result = getattr(self.target, method)(*args)
        return await result if inspect.isawaitable(result) else result

    def stream(self, method: str, *args: Any) -> AsyncIterator[Any]:
        response: AsyncIterator[Any] = getattr(self.target, method)(*args)
        return response
