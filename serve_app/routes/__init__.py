"""HTTP and WebSocket routers, one per resource; `serve_app.app.create_app` mounts them.

Route functions stay thin (parse, call the Runtime, build the response model) so the
behaviour lives in the services and the pipeline, where it is tested without HTTP.
"""

from __future__ import annotations

from fastapi import APIRouter

from serve_app.routes import admin, documents, memories, openai, tenants, websocket

ROUTERS: tuple[APIRouter, ...] = (
    openai.router, memories.router, documents.router, admin.router, tenants.router, websocket.router,
)

__all__ = ["ROUTERS"]
