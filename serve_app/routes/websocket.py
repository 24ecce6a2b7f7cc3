"""`/ws/chat`: chat over a WebSocket, for clients that keep one connection open.

One chat request per message (the JSON of `/v1/chat/completions`, every field included);
token events `{"type": "token", "index", "content"}` (plus `logprobs`, in the chat
completion shape, when asked for), then a `done` event with usage, `finish_reason` (of
choice 0) and `finish_reasons` (of each choice, for `n` > 1) and the `memserve` info.
A bad message gets an error event (mapped by `serve_app.errors.to_error`, as an HTTP
error would be, with the field named as `serve_app.routes.validation` names it) and the
connection stays open for the next one. The socket runs as its caller's tenant
(`RuntimeDep`, from the key checked at the handshake): `user` is a user of that tenant.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from serve_app.errors import to_error
from serve_app.generation import GenerationChunk
from serve_app.protocol import ChatCompletionRequest, ChatLogprobs
from serve_app.responses import usage_of
from serve_app.routes.validation import parse_request
from serve_app.runtime import Runtime, RuntimeDep

logger = logging.getLogger(__name__)

router = APIRouter(tags=["websocket"])


@router.websocket("/ws/chat")
async def ws_chat(websocket: WebSocket, rt: RuntimeDep) -> None:
    await chat_socket(websocket, rt)


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
    body = parse_request(ChatCompletionRequest, raw)
    rt.check_model(body.model)
    prepared = await rt.pipeline.prepare_chat(rt.namespace.scoped(body))
    last = {i: GenerationChunk(text="", index=i) for i in range(prepared.choices)}
    async for chunk in rt.pipeline.stream(prepared):
        last[chunk.index] = chunk
        if chunk.text or chunk.logprobs:
            await websocket.send_json(_token_event(chunk))
    lasts = [last[i] for i in sorted(last)]
    await websocket.send_json({"type": "done", "finish_reason": lasts[0].finish_reason,
                               "finish_reasons": [c.finish_reason for c in lasts],
                               "usage": usage_of(lasts).model_dump(), "memserve": prepared.info.model_dump()})


def _token_event(chunk: GenerationChunk) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "token", "index": chunk.index, "content": chunk.text}
    logprobs = ChatLogprobs.of(chunk.logprobs)
    if logprobs is not None:
        event["logprobs"] = logprobs.model_dump(exclude_none=True)
    return event
