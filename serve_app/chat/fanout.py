"""Independent stages of a step run concurrently (fan-out) or, with `fanout: false`, one
after another (what `benchmarks/bench_fanout.py` compares against); same results.

    async with FanOut(concurrent=True) as fan:
        memories = fan.start(search_memories())
        sources = fan.start(search_knowledge())
    Context(memories=memories.result(), sources=sources.result())

Every future is named where it is started and read by name after the block: no
positional tuples. Stages are expected not to raise (they degrade through `Trace.run`);
if one does, the others are cancelled and the error propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


class FanOut:
    def __init__(self, concurrent: bool) -> None:
        self.concurrent = concurrent
        self._started: list[tuple[Coroutine[Any, Any, Any], asyncio.Future[Any]]] = []

    async def __aenter__(self) -> FanOut:
        return self

    def start(self, work: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        if self.concurrent:
            task = asyncio.ensure_future(work)
            self._started.append((work, task))
            return task
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._started.append((work, future))
        return future

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if error is None:
                await self._finish()
        finally:
            self._cancel_rest()

    async def _finish(self) -> None:
        if self.concurrent:
            await asyncio.gather(*(future for _, future in self._started))
            return
        for work, future in self._started:
            future.set_result(await work)

    def _cancel_rest(self) -> None:
        for work, future in self._started:
            if not future.done():
                future.cancel()
                if not self.concurrent:
                    work.close()


async def first_unless_found(
    concurrent: bool, lookup: Coroutine[Any, Any, T | None], other: Coroutine[Any, Any, Any]
) -> tuple[T | None, Any]:
    """Run `other` beside `lookup`; if the lookup finds something, `other` is cancelled
    (a cache hit makes the query embedding pointless)."""
    if not concurrent:
        found = await lookup
        if found is not None:
            other.close()
            return found, None
        return None, await other
    other_task = asyncio.ensure_future(other)
    try:
        found = await lookup
    except BaseException:
        other_task.cancel()
        raise
    if found is not None:
        other_task.cancel()
        return found, None
    return None, await other_task
