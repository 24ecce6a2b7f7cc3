"""HTTP routes: thin functions from protocol models to the pipeline and memory service.

`create_app(runtime)` is called by the Orchestrator deployment once per replica (Ray
Serve's `__serve_build_asgi_app__`); tests may call it with a Runtime over fakes.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Path, Query, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from pydantic import ValidationError

from serve_app.catalog import CatalogService, parse_csv
from serve_app.auth import ApiKeyAuth
from serve_app.core.metrics import Metrics, MetricsSink
from serve_app.errors import APIError, BodySizeLimit, error_body, install_error_handlers
from serve_app.core.store import MemoryStore
from serve_app.ingest.parsers import detect_kind
from serve_app.knowledge import KnowledgeService, parse_scope
from serve_app.memory_service import MemoryService
from serve_app.near_cache import NearCacheServices
from serve_app.pipeline import ChatPipeline, Prepared
from serve_app.protocol import (
    MAX_USER_CHARS,
    TIERS,
    UserCheck,
    AddMemoriesRequest,
    AddMemoriesResponse,
    CacheClearRequest,
    CatalogRequest,
    CatalogResponse,
    ChatCompletionRequest,
    ConsolidateRequest,
    DocumentAccepted,
    DocumentList,
    DocumentOut,
    JobOut,
    ForgetResponse,
    HistoryEntry,
    HistoryResponse,
    UpdatedResponse,
    UpdateMemoryRequest,
    CompletionRequest,
    DeletedResponse,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    HealthResponse,
    MemoryList,
    ModelCard,
    ModelList,
    SearchMemoriesRequest,
    SearchMemoriesResponse,
)
from serve_app.generation import GenerationChunk, GenerationResult, PromptTooLongError
from serve_app.responses import chain, chat_events, chat_response, completion_events, completion_response
from serve_app.services import Services
from serve_app.settings import AppSettings

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class Runtime:
    settings: AppSettings
    services: Services
    pipeline: ChatPipeline
    memory: MemoryService
    catalog: CatalogService
    knowledge: KnowledgeService
    metrics: Metrics
    started: int

    def check_model(self, model: str, kind: str = "llm") -> None:
        known = self.settings.llm.served_model_name if kind == "llm" else self.settings.embedder.served_model_name
        if model != known:
            raise APIError(404, f"The model `{model}` does not exist; this server serves `{known}`.", "model", "model_not_found")


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(runtime)]
UserQuery = Annotated[str, Query(min_length=1, max_length=MAX_USER_CHARS), UserCheck]


async def _answer(
    rt: Runtime, prepared: Prepared, body: ChatCompletionRequest | CompletionRequest, echo: str | None = None
) -> Any:
    model = rt.settings.llm.served_model_name
    chunks = rt.pipeline.stream(prepared)
    is_chat = isinstance(body, ChatCompletionRequest)
    if not body.stream:
        result = GenerationResult.collect([c async for c in chunks])
        if is_chat:
            return chat_response(model, prepared, result)
        return completion_response(model, prepared, result, echo)
    # Pull the first chunk before answering 200, so a request the engine refuses
    # (e.g. too long for the context) gets a proper 4xx instead of a broken stream.
    first = await anext(chunks)
    events = chat_events if is_chat else completion_events
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        events(prepared, model, chain(first, chunks), include_usage), media_type="text/event-stream", headers=SSE_HEADERS
    )


def create_app(rt: Runtime) -> FastAPI:
    app = FastAPI(title="memserve", version="0.1.0")
    app.state.runtime = rt
    # Uploads get their own limit (plus room for the multipart envelope).
    app.add_middleware(BodySizeLimit, max_bytes=rt.settings.server.max_body_bytes,
                       overrides={"/v1/documents": rt.settings.documents.max_bytes + 64 * 1024})
    install_error_handlers(app)
    if keys := rt.settings.server.all_api_keys():
        app.add_middleware(ApiKeyAuth, keys=keys)  # outermost: nothing is read before the key

    @app.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        return HealthResponse()

    @app.get("/v1/models", response_model=ModelList)
    async def list_models(rt: RuntimeDep) -> ModelList:
        names = [rt.settings.llm.served_model_name, rt.settings.embedder.served_model_name]
        return ModelList(data=[ModelCard(id=n, created=rt.started) for n in names])

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, rt: RuntimeDep) -> Any:
        rt.check_model(body.model)
        return await _answer(rt, await rt.pipeline.prepare_chat(body), body)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, rt: RuntimeDep) -> Any:
        rt.check_model(body.model)
        echo = body.prompt if body.echo else None
        return await _answer(rt, await rt.pipeline.prepare_completion(body), body, echo)  # type: ignore[arg-type]

    @app.post("/v1/embeddings", response_model=EmbeddingResponse)
    async def embeddings(body: EmbeddingRequest, rt: RuntimeDep) -> EmbeddingResponse:
        rt.check_model(body.model, kind="embedding")
        texts: list[str] = body.input  # type: ignore[assignment]
        vectors = await rt.services.embed(texts)
        tokens = await rt.services.count_embedding_tokens(texts)
        data = [
            EmbeddingData(index=i, embedding=_encode_vector(v, body.encoding_format)) for i, v in enumerate(vectors)
        ]
        return EmbeddingResponse(
            data=data, model=body.model, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
        )

    @app.post("/v1/memories", response_model=AddMemoriesResponse)
    async def add_memories(body: AddMemoriesRequest, rt: RuntimeDep) -> AddMemoriesResponse:
        items = body.items()
        too_long = [i for i, m in enumerate(items) if len(m.text) > rt.settings.memory.max_text_chars]
        if too_long:
            raise APIError(400, f"memory text is longer than {rt.settings.memory.max_text_chars} characters", "text")
        ids, seq = await rt.memory.add(body.user, items, dedup=body.dedup)
        return AddMemoriesResponse(ids=ids, seq=seq)

    @app.post("/v1/memories/search", response_model=SearchMemoriesResponse)
    async def search_memories(body: SearchMemoriesRequest, rt: RuntimeDep) -> SearchMemoriesResponse:
        results = await rt.memory.search(body)
        return SearchMemoriesResponse(results=results)

    @app.get("/v1/memories", response_model=MemoryList)
    async def list_memories(
        rt: RuntimeDep,
        user: UserQuery,
        tier: Annotated[str | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(pattern=r"^\d+$")] = None,
    ) -> MemoryList:
        if tier is not None and tier not in TIERS:
            raise APIError(400, f"tier must be one of {', '.join(TIERS)}", "tier")
        data, next_cursor = await rt.memory.list(user, tier, limit, cursor)
        return MemoryList(data=data, next_cursor=next_cursor)

    @app.get("/v1/memories/stats")
    async def memory_stats(user: UserQuery, rt: RuntimeDep) -> dict[str, Any]:
        return await rt.memory.stats(user)

    @app.post("/v1/memories/consolidate")
    async def consolidate(rt: RuntimeDep, body: ConsolidateRequest | None = None) -> dict[str, Any]:
        run = await rt.services.consolidate(body.user if body else None)
        return {"run": run, "stats": await rt.services.consolidation_stats()}

    @app.get("/v1/memories/consolidation")
    async def consolidation_stats(rt: RuntimeDep) -> dict[str, Any]:
        return await rt.services.consolidation_stats()

    @app.get("/v1/memories/{memory_id}")
    async def get_memory(memory_id: str, user: UserQuery, rt: RuntimeDep) -> Any:
        record = await rt.memory.get(user, memory_id)
        if record is None:
            raise _no_memory(memory_id)
        return record

    @app.patch("/v1/memories/{memory_id}", response_model=UpdatedResponse)
    async def update_memory(memory_id: str, body: UpdateMemoryRequest, rt: RuntimeDep) -> UpdatedResponse:
        updated = await rt.memory.update(memory_id, body)
        if updated is None:
            raise _no_memory(memory_id)
        record, seq = updated
        return UpdatedResponse(id=memory_id, seq=seq, memory=record)

    @app.get("/v1/memories/{memory_id}/history", response_model=HistoryResponse)
    async def memory_history(memory_id: str, user: UserQuery, rt: RuntimeDep) -> HistoryResponse:
        events = await rt.memory.history(user, memory_id)
        if not events:
            raise _no_memory(memory_id)
        return HistoryResponse(id=memory_id, history=[HistoryEntry(**{f: getattr(e, f) for f in HistoryEntry.model_fields}) for e in events])

    @app.delete("/v1/users/{user}", response_model=ForgetResponse)
    async def forget_user(
        user: Annotated[str, Path(min_length=1, max_length=MAX_USER_CHARS), UserCheck], rt: RuntimeDep
    ) -> ForgetResponse:
        return ForgetResponse(user=user, seq=await rt.memory.forget(user))

    @app.delete("/v1/memories/{memory_id}", response_model=DeletedResponse)
    async def delete_memory(memory_id: str, user: UserQuery, rt: RuntimeDep) -> DeletedResponse:
        seq = await rt.memory.delete(user, memory_id)
        if seq is None:
            raise _no_memory(memory_id)
        return DeletedResponse(id=memory_id, seq=seq)

    @app.get("/v1/cache/stats")
    async def cache_stats(rt: RuntimeDep) -> dict[str, Any]:
        return await rt.services.cache_stats()

    @app.post("/v1/cache/clear")
    async def cache_clear(rt: RuntimeDep, body: CacheClearRequest | None = None) -> dict[str, Any]:
        scope = f"user:{body.user}" if body and body.user else None
        return {"cleared": await rt.services.cache_clear(scope), "scope": scope or "all"}

    @app.post("/v1/catalog", response_model=CatalogResponse)
    async def load_catalog(request: Request, rt: RuntimeDep) -> CatalogResponse:
        """JSON `{products: [...]}` or a CSV body (text/csv) with a header row."""
        raw = await request.body()
        try:
            if "csv" in request.headers.get("content-type", ""):
                products = parse_csv(raw)
            else:
                products = CatalogRequest.model_validate_json(raw).products
        except (ValidationError, ValueError, UnicodeDecodeError) as exc:
            raise APIError(400, f"invalid catalog: {_first_error(exc)}", "products") from None
        if not products:
            raise APIError(400, "the catalog has no products", "products")
        count, seq = await rt.catalog.load(products)
        return CatalogResponse(count=count, seq=seq)

    @app.post("/v1/documents", response_model=DocumentAccepted, status_code=202)
    async def upload_document(
        rt: RuntimeDep, file: Annotated[UploadFile, File()], scope: Annotated[str, Form()] = "shared"
    ) -> DocumentAccepted:
        try:
            scope = parse_scope(scope)
        except ValueError as exc:
            raise APIError(400, str(exc), "scope") from None
        filename = file.filename or "upload"
        detect_kind(filename)  # refuse an unsupported type before reading the body
        path, content_hash = await rt.knowledge.spool(file.file, rt.settings.resolve_path("uploads"))
        job = await rt.knowledge.submit(filename, path, content_hash, scope)
        return DocumentAccepted(job_id=job.id, document_id=job.document_id)

    @app.get("/v1/documents/jobs/{job_id}", response_model=JobOut)
    async def document_job(job_id: str, rt: RuntimeDep) -> JobOut:
        job = await rt.knowledge.jobs.get(job_id)
        if job is None:
            raise APIError(404, f"no job {job_id}", "job_id", "job_not_found")
        return JobOut(id=job.id, document_id=job.document_id, filename=job.filename, status=job.status,  # type: ignore[arg-type]
                      chunks_done=job.chunks_done, chunks_total=job.chunks_total, error=job.error)

    @app.get("/v1/documents", response_model=DocumentList)
    async def list_documents(rt: RuntimeDep) -> DocumentList:
        records = sorted(await rt.knowledge.documents(), key=lambda r: r.metadata["created_at"])
        return DocumentList(data=[
            DocumentOut(id=r.metadata["document_id"], filename=r.metadata["filename"], scope=r.metadata["scope"],
                        chunks=r.metadata["chunks"], created_at=r.metadata["created_at"])
            for r in records
        ])

    @app.delete("/v1/documents/{document_id}")
    async def delete_document(document_id: str, rt: RuntimeDep) -> dict[str, Any]:
        if not await rt.knowledge.delete(document_id):
            raise APIError(404, f"no document {document_id}", "document_id", "document_not_found")
        return {"id": document_id, "deleted": True}

    @app.get("/v1/metrics")
    async def metrics(rt: RuntimeDep) -> dict[str, Any]:
        return {"operations": rt.metrics.summary(), **await rt.services.deployment_stats()}

    @app.websocket("/ws/chat")
    async def ws_chat(websocket: WebSocket) -> None:
        await chat_socket(websocket, websocket.app.state.runtime)

    return app


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(exc)


async def chat_socket(websocket: WebSocket, rt: Runtime) -> None:
    """One chat request per message; token events, then a done event. A bad message gets
    an error event and the connection stays open for the next one."""
    await websocket.accept()
    while True:
        try:
            raw = await websocket.receive_text()
        except WebSocketDisconnect:
            return
        try:
            body = ChatCompletionRequest.model_validate_json(raw)
            rt.check_model(body.model)
            prepared = await rt.pipeline.prepare_chat(body)
            last = None
            async for chunk in rt.pipeline.stream(prepared):
                last = chunk
                if chunk.text:
                    await websocket.send_json({"type": "token", "content": chunk.text})
            usage = _usage_dict(last)
            await websocket.send_json({"type": "done", "finish_reason": last.finish_reason if last else None,
                                       "usage": usage, "memserve": prepared.info.model_dump()})
        except WebSocketDisconnect:
            return
        except APIError as exc:
            await websocket.send_json({"type": "error", "error": error_body(exc.status, exc.message, exc.param, exc.code)["error"]})
        except PromptTooLongError as exc:
            message = str(getattr(exc, "cause", None) or exc)
            await websocket.send_json({"type": "error", "error": error_body(400, message, "messages", "context_length_exceeded")["error"]})
        except ValidationError as exc:
            await websocket.send_json({"type": "error", "error": error_body(400, _first_error(exc), code="invalid_value")["error"]})
        except Exception as exc:  # noqa: BLE001 - report, keep the connection
            logger.exception("websocket chat failed")
            await websocket.send_json({"type": "error", "error": error_body(500, f"internal error: {exc}")["error"]})


def _usage_dict(chunk: GenerationChunk | None) -> dict[str, int]:
    prompt = chunk.prompt_tokens if chunk else 0
    completion = chunk.completion_tokens if chunk else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _no_memory(memory_id: str) -> APIError:
    """Unknown ids and other users' ids get the same answer: nothing leaks."""
    return APIError(404, f"no memory {memory_id}", "memory_id", "memory_not_found")


def _encode_vector(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode()
    return [float(x) for x in vector]


def build_runtime(
    settings: AppSettings, services: Services, store: MemoryStore, num_shards: int,
    metrics_sink: MetricsSink | None = None,
) -> Runtime:
    """Wire the request logic of one replica over the given services (handles or fakes)."""
    if settings.cache.local_ttl_s > 0:
        services = NearCacheServices(services, settings.cache.local_max_entries, settings.cache.local_ttl_s)
    memory = MemoryService(store, services, num_shards, settings.memory)
    catalog = CatalogService(store, services, num_shards)
    knowledge = KnowledgeService(store, services, settings.documents, settings.embedder.dimension)
    metrics = Metrics(sink=metrics_sink)
    pipeline = ChatPipeline(settings, services, memory, catalog, metrics, knowledge)
    return Runtime(settings=settings, services=services, pipeline=pipeline, memory=memory, catalog=catalog,
                   knowledge=knowledge, metrics=metrics, started=int(time.time()))
