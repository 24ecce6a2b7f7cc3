"""`/ws/chat`: chat over a WebSocket, for clients that keep one connection open.

One chat request per message; token events, then a `done` event with usage and the
`memserve` info. A bad message gets an error event (mapped by `serve_app.errors.to_error`,
as an HTTP error would be) and the connection stays open for the next one.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from serve_app.errors import as_request_error, to_error
from serve_app.generation import GenerationChunk
from serve_app.protocol import ChatCompletionRequest
from serve_app.responses import usage_of
from serve_app.runtime import Runtime

logger = logging.getLogger(__name__)

router = APIRouter(tags=["websocket"])


@router.websocket("/ws/chat")
async def ws_chat(websocket: WebSocket) -> None:
    await chat_socket(websocket, websocket.app.state.runtime)


async def chat_socket(websocket: WebSocket, rt: Runtime) -> None:
    await websocket.accept()
    while True:
        try:
            await _chat(websocket, rt, await websocket.receive_text())
        except WebSocketDisconnect:
            return
        except Exception as exc:  # report it, keep the connection open
            await websocket.send_json({"type": "error", "error": to_error(exc).detail()})


async def _chat(websocket: WebSocket, rt: Runtime, raw: str) -> None:
    body = _parse(raw)
    rt.check_model(body.model)
    prepared = await rt.pipeline.prepare_chat(body)
    last: GenerationChunk | None = None
    async for chunk in rt.pipeline.stream(prepared):
        last = chunk
        if chunk.text:
            await websocket.send_json({"type": "token", "content": chunk.text})
    await websocket.send_json({"type": "done", "finish_reason": last.finish_reason if last else None,
                               "usage": usage_of(last).model_dump(), "memserve": prepared.info.model_dump()})


def _parse(raw: str) -> ChatCompletionRequest:
    """A message that fails the model is the caller's error, as a bad HTTP body is."""
    try:
        return ChatCompletionRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise as_request_error(exc) from None
