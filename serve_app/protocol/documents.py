"""Shapes of `/v1/documents*`: an accepted upload, its ingestion job, the registry list.

Uploads are asynchronous (202 + a job to poll), so the job's status set is part of
the protocol and pinned here as a Literal.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class DocumentAccepted(BaseModel):
    job_id: str
    document_id: str


class JobOut(BaseModel):
    id: str
    document_id: str
    filename: str
    status: Literal["queued", "running", "done", "failed"]
    chunks_done: int
    chunks_total: int
    error: str | None


class DocumentOut(BaseModel):
    id: str
    filename: str
    scope: str
    chunks: int
    created_at: float


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DocumentOut]
