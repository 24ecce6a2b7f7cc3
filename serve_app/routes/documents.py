"""The knowledge base: upload a document (202 + a job to poll), list and delete them.

The upload is spooled to disk and ingested in the background, so the request returns
before the (possibly long) parse, chunk and embed; the job says how far it got.
Scopes are the caller's tenant's (`shared` is the tenant's shared scope); `rt.knowledge`
only lists, deletes and reports jobs of that tenant, and responses show scopes as the
caller names them.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile

from serve_app.documents import SCOPE_PATTERN, parse_scope
from serve_app.errors import APIError
from serve_app.ingest.parsers import KINDS, MAX_FILENAME_CHARS, MEDIA_TYPES, upload_name
from serve_app.protocol import DocumentAccepted, DocumentList, DocumentOut, JobOut
from serve_app.runtime import RuntimeDep

logger = logging.getLogger(__name__)

router = APIRouter(tags=["documents"])


_FILE_HELP = (f"a non-empty file whose name (at most {MAX_FILENAME_CHARS} characters, no control characters) ends "
              f"in {', '.join(sorted(KINDS))}, or else whose part's Content-Type is one of the `encoding`'s")
# The part's media types that make an upload a document (its filename's extension may instead).
_UPLOAD = {"requestBody": {"content": {"multipart/form-data": {"encoding": {"file": {
    "contentType": ", ".join(MEDIA_TYPES)}}}}}}


@router.post("/v1/documents", response_model=DocumentAccepted, status_code=202, openapi_extra=_UPLOAD)
async def upload_document(
    rt: RuntimeDep, file: Annotated[UploadFile, File(description=_FILE_HELP, json_schema_extra={"minLength": 1})],
    scope: Annotated[str, Form(description="`shared` or `user:<id>` (empty: `shared`)",
                               json_schema_extra={"pattern": f"{SCOPE_PATTERN}|^$"})] = "shared",
) -> DocumentAccepted:
    try:
        scope = rt.namespace.scope(parse_scope(scope))
    except ValueError as exc:
        raise APIError(400, str(exc), "scope") from None
    filename = upload_name(file.filename or "upload", file.content_type)  # refused before the body is read
    path, content_hash = await rt.knowledge.spool(file.file, rt.settings.resolve_path("uploads"))
    job = await rt.knowledge.submit(filename, path, content_hash, scope)
    return DocumentAccepted(job_id=job.id, document_id=job.document_id)


@router.get("/v1/documents/jobs/{job_id}", response_model=JobOut)
async def document_job(job_id: str, rt: RuntimeDep) -> JobOut:
    job = await rt.knowledge.job(job_id)
    if job is None:
        raise APIError(404, f"no job {job_id}", "job_id", "job_not_found")
    return JobOut(id=job.id, document_id=job.document_id, filename=job.filename, status=job.status,
                  chunks_done=job.chunks_done, chunks_total=job.chunks_total, error=job.error)


@router.get("/v1/documents", response_model=DocumentList)
async def list_documents(rt: RuntimeDep) -> DocumentList:
    documents = sorted(await rt.knowledge.documents(), key=lambda d: d.created_at)
    return DocumentList(data=[
        DocumentOut(id=d.id, filename=d.filename, scope=rt.namespace.external_scope(d.scope) or "", chunks=d.chunks,
                    created_at=d.created_at)
        for d in documents
    ])


@router.delete("/v1/documents/{document_id}")
async def delete_document(document_id: str, rt: RuntimeDep) -> dict[str, Any]:
    if not await rt.knowledge.delete(document_id):
        raise APIError(404, f"no document {document_id}", "document_id", "document_not_found")
    return {"id": document_id, "deleted": True}
