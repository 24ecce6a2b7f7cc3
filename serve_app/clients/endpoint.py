"""The one narrow seam between a client and the deployment it talks to.

A client calls a method of its deployment by name through an `Endpoint`. Over Ray it is a
`HandleEndpoint` around a `DeploymentHandle`; in unit tests a `LocalEndpoint` around the
very object the deployment would host (an `InProcessCache`, a `ShardSearcher`, ...) or a
fake of it. So each typed client is written once and tested without Ray, the way httpx
plugs transports in under one client.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol, TypeVar

from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError


class StageUnavailable(Exception):
    """A deployment refused a call: it is shedding load (its `max_queued_requests` is
    reached) or it is not running. Ray Serve's own exceptions for these stop at the
    endpoint (Ray's ingress wrapper would turn them into plain-text 503s of its own); the
    app answers this one with an OpenAI-style 503 and `Retry-After`."""

    def __init__(self, message: str, overloaded: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.overloaded = overloaded
        self.retry_after_s = retry_after_s

    @classmethod
    def of(cls, exc: BackPressureError | DeploymentUnavailableError) -> StageUnavailable:
        if isinstance(exc, BackPressureError):
            return cls(exc.message, overloaded=True, retry_after_s=exc.retry_after_s)
        return cls(exc.message, overloaded=False)


T = TypeVar("T")


async def within(work: Awaitable[T], seconds: float, what: str) -> T:
    """`work`, or StageUnavailable (a 503 to retry) once it has taken `seconds`. A call to
    a replica on a node that just died answers nothing until Ray notices the loss, which
    took 15-40 s in the cluster tests: past its deadline a request is better refused."""
    try:
        return await asyncio.wait_for(work, seconds)
    except TimeoutError:
        raise StageUnavailable(f"{what} did not answer within {seconds:g} s", overloaded=False,
                               retry_after_s=1.0) from None


_REFUSALS = (BackPressureError, DeploymentUnavailableError)


class Endpoint(Protocol):
    async def call(self, method: str, *args: Any) -> Any:
        """Call `method` on the deployment and return its result."""
        ...

    def stream(self, method: str, *args: Any) -> AsyncIterator[Any]:
        """Call a generator method and iterate over what it yields."""
        ...


class HandleEndpoint:
    """An endpoint over a Ray Serve `DeploymentHandle`; Ray's refusals become `StageUnavailable`."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._streaming = handle.options(stream=True)

    async def call(self, method: str, *args: Any) -> Any:
        try:
            return await getattr(self._handle, method).remote(*args)
        except _REFUSALS as exc:
            raise StageUnavailable.of(exc) from exc

    async def stream(self, method: str, *args: Any) -> AsyncIterator[Any]:
        try:
            async for item in getattr(self._streaming, method).remote(*args):
                yield item
        except _REFUSALS as exc:
            raise StageUnavailable.of(exc) from exc


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
