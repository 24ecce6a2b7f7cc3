"""memserve's memory API: `/v1/memories*`, consolidation, and forgetting a user.

Unknown ids and other users' ids get the same 404, so the API never tells a caller
that a memory exists under someone else. Literal paths (`stats`, `consolidation`) are
declared before `/v1/memories/{memory_id}`, which would otherwise capture them.
Every route is a `StrictRoute`: an unknown body field (or `filters` key) is a 400
`unknown_parameter` naming it, and no integer reaches the store above `MAX_SEQ`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import AfterValidator

from serve_app.errors import APIError
from serve_app.protocol import (
    MAX_SEQ,
    MAX_USER_CHARS,
    AddMemoriesRequest,
    AddMemoriesResponse,
    ConsolidateRequest,
    DeletedResponse,
    ForgetResponse,
    HistoryEntry,
    HistoryResponse,
    MemoryList,
    MemoryWriteResult,
    SearchMemoriesRequest,
    SearchMemoriesResponse,
    UpdatedResponse,
    UpdateMemoryRequest,
    UserCheck,
)
from serve_app.routes.validation import StrictRoute
from serve_app.runtime import RuntimeDep

logger = logging.getLogger(__name__)

router = APIRouter(tags=["memories"], route_class=StrictRoute)

UserQuery = Annotated[str, Query(min_length=1, max_length=MAX_USER_CHARS), UserCheck]
UserPath = Annotated[str, Path(min_length=1, max_length=MAX_USER_CHARS), UserCheck]


def _check_cursor(cursor: str | None) -> str | None:
    """19 digits can still exceed SQLite's integer; the pattern bounds the length only."""
    if cursor is not None and int(cursor) > MAX_SEQ:
        raise ValueError(f"cursor may not exceed {MAX_SEQ}")
    return cursor


# A `next_cursor` from an earlier page: a row id, at most 2**63-1 (19 digits).
CursorQuery = Annotated[
    str | None,
    Query(pattern=r"^[0-9]{1,19}$", description=f"a next_cursor from an earlier page (at most {MAX_SEQ})"),
    AfterValidator(_check_cursor),
]


@router.post("/v1/memories", response_model=AddMemoriesResponse)
async def add_memories(body: AddMemoriesRequest, rt: RuntimeDep) -> AddMemoriesResponse:
    items = body.items()
    limit = rt.settings.memory.max_text_chars
    if any(len(m.text) > limit for m in items):
        raise APIError(400, f"memory text is longer than {limit} characters", "text")
    written = await rt.memory.add(body.user, items, dedup=body.dedup)
    results = [MemoryWriteResult(id=o.id, event=o.event, reason=o.reason, merged_into=o.merged_into)
               for o in written.outcomes]
    return AddMemoriesResponse(ids=written.ids, seq=written.seq, results=results)


@router.post("/v1/memories/search", response_model=SearchMemoriesResponse)
async def search_memories(body: SearchMemoriesRequest, rt: RuntimeDep) -> SearchMemoriesResponse:
    return SearchMemoriesResponse(results=await rt.memory.search(body))


@router.get("/v1/memories", response_model=MemoryList)
async def list_memories(
    rt: RuntimeDep,
    user: UserQuery,
    tier: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorQuery = None,
) -> MemoryList:
    data, next_cursor = await rt.memory.page(user, tier, limit, cursor)
    return MemoryList(data=data, next_cursor=next_cursor)


@router.get("/v1/memories/stats")
async def memory_stats(user: UserQuery, rt: RuntimeDep) -> dict[str, Any]:
    return await rt.memory.stats(user)


@router.post("/v1/memories/consolidate")
async def consolidate(rt: RuntimeDep, body: ConsolidateRequest | None = None) -> dict[str, Any]:
    run = await rt.clients.consolidator.run(body.user if body else None)
    return {"run": run, "stats": await rt.clients.consolidator.stats()}


@router.get("/v1/memories/consolidation")
async def consolidation_stats(rt: RuntimeDep) -> dict[str, Any]:
    return await rt.clients.consolidator.stats()


@router.get("/v1/memories/{memory_id}")
async def get_memory(memory_id: str, user: UserQuery, rt: RuntimeDep) -> Any:
    record = await rt.memory.get(user, memory_id)
    if record is None:
        raise _no_memory(memory_id)
    return record


@router.patch("/v1/memories/{memory_id}", response_model=UpdatedResponse)
async def update_memory(memory_id: str, body: UpdateMemoryRequest, rt: RuntimeDep) -> UpdatedResponse:
    updated = await rt.memory.update(memory_id, body)
    if updated is None:
        raise _no_memory(memory_id)
    record, seq = updated
    return UpdatedResponse(id=memory_id, seq=seq, memory=record)


@router.get("/v1/memories/{memory_id}/history", response_model=HistoryResponse)
async def memory_history(memory_id: str, user: UserQuery, rt: RuntimeDep) -> HistoryResponse:
    events = await rt.memory.history(user, memory_id)
    if not events:
        raise _no_memory(memory_id)
    history = [HistoryEntry(**{f: getattr(e, f) for f in HistoryEntry.model_fields}) for e in events]
    return HistoryResponse(id=memory_id, history=history)


@router.delete("/v1/users/{user}", response_model=ForgetResponse)
async def forget_user(user: UserPath, rt: RuntimeDep) -> ForgetResponse:
    return ForgetResponse(user=user, seq=await rt.memory.forget(user))


@router.delete("/v1/memories/{memory_id}", response_model=DeletedResponse)
async def delete_memory(memory_id: str, user: UserQuery, rt: RuntimeDep) -> DeletedResponse:
    seq = await rt.memory.delete(user, memory_id)
    if seq is None:
        raise _no_memory(memory_id)
    return DeletedResponse(id=memory_id, seq=seq)


def _no_memory(memory_id: str) -> APIError:
    """Unknown ids and other users' ids get the same answer: nothing leaks."""
    return APIError(404, f"no memory {memory_id}", "memory_id", "memory_not_found")
