"""memserve's memory API: `/v1/memories*`, consolidation, and forgetting a user.

Unknown ids and other users' ids get the same 404, so the API never tells a caller
that a memory exists under someone else. Literal paths (`stats`, `consolidation`) are
declared before `/v1/memories/{memory_id}`, which would otherwise capture them.
Every route is a `StrictRoute`: an unknown body field (or `filters` key) is a 400
`unknown_parameter` naming it, and no integer reaches the store above `MAX_SEQ`.
User ids are the caller's tenant's: `rt.namespace` makes them stored names
(`serve_app.tenants`), and responses show the caller's own id.
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
    Tier,
    UpdatedResponse,
    UpdateMemoryRequest,
    UserCheck,
)
from serve_app.protocol.rules import digits_at_most
from serve_app.routes.validation import StrictRoute
from serve_app.runtime import AdminDep, PrincipalDep, RuntimeDep

logger = logging.getLogger(__name__)

router = APIRouter(tags=["memories"], route_class=StrictRoute)

UserQuery = Annotated[str, Query(min_length=1, max_length=MAX_USER_CHARS), UserCheck]
UserPath = Annotated[str, Path(min_length=1, max_length=MAX_USER_CHARS), UserCheck]


def _check_cursor(cursor: str | None) -> str | None:
    """19 digits can still exceed SQLite's integer; the pattern checked bounds the length only
    (the schema's states both)."""
    if cursor is not None and int(cursor) > MAX_SEQ:
        raise ValueError(f"cursor may not exceed {MAX_SEQ}")
    return cursor


# A `next_cursor` from an earlier page: a row id, at most 2**63-1 (19 digits).
CursorQuery = Annotated[
    str | None,
    Query(pattern=r"^[0-9]{1,19}$", description=f"a next_cursor from an earlier page (at most {MAX_SEQ})",
          json_schema_extra={"pattern": digits_at_most(MAX_SEQ)}),  # both checks, as one pattern
    AfterValidator(_check_cursor),
]


@router.post("/v1/memories", response_model=AddMemoriesResponse)
async def add_memories(body: AddMemoriesRequest, rt: RuntimeDep) -> AddMemoriesResponse:
    items = body.items()
    limit = rt.settings.memory.max_text_chars
    if any(len(m.text) > limit for m in items):
        raise APIError(400, f"memory text is longer than {limit} characters", "text")
    if body.tier is not None:  # with `memories`, each names its own; a bad one is still a 400
        rt.memory.tiers.check(body.tier)
    user = rt.namespace.user(body.user)
    if body.messages is not None and (body.extraction or rt.settings.memory.extraction) == "llm":
        extracted = await rt.extraction.write(user, items, dedup=body.dedup)
        written, seq, report = extracted.written, extracted.seq, extracted.report
    else:
        written = await rt.memory.add(user, items, dedup=body.dedup)
        seq, report = written.seq, None
    results = [MemoryWriteResult(id=o.id, event=o.event, reason=o.reason, merged_into=o.merged_into)
               for o in written.outcomes]
    return AddMemoriesResponse(ids=written.ids, seq=seq, results=results, extraction=report)


@router.post("/v1/memories/search", response_model=SearchMemoriesResponse, responses={
    409: {"description": "`min_seq` is beyond the latest write's seq: no write has answered with it yet"}})
async def search_memories(body: SearchMemoriesRequest, rt: RuntimeDep) -> SearchMemoriesResponse:
    if body.min_seq and body.min_seq > (latest := await rt.memory.last_seq()):
        # No write has answered with it (yet): waiting would only time out, seconds later.
        raise APIError(409, f"min_seq {body.min_seq} is beyond the latest write's seq ({latest})", "min_seq",
                       "seq_not_reached")
    return SearchMemoriesResponse(results=await rt.memory.search(rt.namespace.scoped(body)))


@router.get("/v1/memories", response_model=MemoryList)
async def list_memories(
    rt: RuntimeDep,
    user: UserQuery,
    tier: Annotated[Tier | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorQuery = None,
) -> MemoryList:
    data, next_cursor = await rt.memory.page(rt.namespace.user(user), tier, limit, cursor)
    return MemoryList(data=data, next_cursor=next_cursor)


@router.get("/v1/memories/stats")
async def memory_stats(user: UserQuery, rt: RuntimeDep) -> dict[str, Any]:
    return {**await rt.memory.stats(rt.namespace.user(user)), "user": user}


@router.post("/v1/memories/consolidate")
async def consolidate(rt: RuntimeDep, caller: PrincipalDep, body: ConsolidateRequest | None = None) -> dict[str, Any]:
    """One user of the caller's tenant; every user of every tenant needs an admin key, and
    only admins see the Consolidator's counters (they add up every tenant's users)."""
    if (body is None or body.user is None) and not caller.admin:
        raise APIError(403, "consolidating every user needs an admin API key; name a user", "user", "admin_required")
    run = await rt.clients.consolidator.run(rt.namespace.user(body.user) if body and body.user else None)
    return {"run": run, "stats": await rt.clients.consolidator.stats() if caller.admin else None}


@router.get("/v1/memories/consolidation")
async def consolidation_stats(rt: RuntimeDep, _: AdminDep) -> dict[str, Any]:
    """Counters over every tenant's users: admin only."""
    return await rt.clients.consolidator.stats()


@router.get("/v1/memories/{memory_id}")
async def get_memory(memory_id: str, user: UserQuery, rt: RuntimeDep) -> Any:
    record = await rt.memory.get(rt.namespace.user(user), memory_id)
    if record is None:
        raise _no_memory(memory_id)
    return record


@router.patch("/v1/memories/{memory_id}", response_model=UpdatedResponse)
async def update_memory(memory_id: str, body: UpdateMemoryRequest, rt: RuntimeDep) -> UpdatedResponse:
    if body.text is not None and len(body.text) > rt.settings.memory.max_text_chars:
        raise APIError(400, f"memory text is longer than {rt.settings.memory.max_text_chars} characters", "text")
    updated = await rt.memory.update(memory_id, rt.namespace.scoped(body))
    if updated is None:
        raise _no_memory(memory_id)
    record, seq = updated
    return UpdatedResponse(id=memory_id, seq=seq, memory=record)


@router.get("/v1/memories/{memory_id}/history", response_model=HistoryResponse)
async def memory_history(memory_id: str, user: UserQuery, rt: RuntimeDep) -> HistoryResponse:
    events = await rt.memory.history(rt.namespace.user(user), memory_id)
    if not events:
        raise _no_memory(memory_id)
    history = [HistoryEntry(**{f: getattr(e, f) for f in HistoryEntry.model_fields}) for e in events]
    return HistoryResponse(id=memory_id, history=history)


@router.delete("/v1/users/{user}", response_model=ForgetResponse)
async def forget_user(user: UserPath, rt: RuntimeDep) -> ForgetResponse:
    return ForgetResponse(user=user, seq=await rt.memory.forget(rt.namespace.user(user)))


@router.delete("/v1/memories/{memory_id}", response_model=DeletedResponse)
async def delete_memory(memory_id: str, user: UserQuery, rt: RuntimeDep) -> DeletedResponse:
    seq = await rt.memory.delete(rt.namespace.user(user), memory_id)
    if seq is None:
        raise _no_memory(memory_id)
    return DeletedResponse(id=memory_id, seq=seq)


def _no_memory(memory_id: str) -> APIError:
    """Unknown ids and other users' ids get the same answer: nothing leaks."""
    return APIError(404, f"no memory {memory_id}", "memory_id", "memory_not_found")
