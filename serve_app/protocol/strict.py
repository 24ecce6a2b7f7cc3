"""No OpenAI field is silently ignored: every request field is implemented, refused, or
on a short documented ignore-list.

The OpenAI request models (chat, completions, embeddings, the `memserve` options, chat
messages) derive from `StrictModel`: `extra="forbid"`, so a field memserve does not know
fails validation as pydantic's `extra_forbidden` (answered 400, code `unknown_parameter`,
`param` naming it). Fields OpenAI defines that memserve cannot honour are listed per model
in `unsupported` with the values that are no-ops (e.g. `tools: []`, `tool_choice: "none"`);
any other value fails as `unsupported_parameter` (400, `param` naming it). The error
codes are set where the request is parsed (`serve_app.routes.validation`), since this
package does not depend on the HTTP layer.

The ignore-list (`IGNORED_CHAT_FIELDS`), accepted on chat requests, dropped, logged at
debug. Each is a hint to OpenAI's platform that cannot change the answer here:

- `store`, `metadata`: keep the completion in OpenAI's dashboard for evals/distillation.
  memserve has no such store (what it remembers is governed by `memserve.write_back`).
- `service_tier`: OpenAI's pricing/latency tier; memserve has one tier.
- `safety_identifier`: a hashed end-user id for OpenAI's abuse monitoring (which replaces
  the old use of `user`); memserve does no abuse monitoring and names memory owners by `user`.
- `prompt_cache_key`: a routing hint for OpenAI's prompt cache; vLLM's prefix cache needs none.

Also accepted without effect: `name` on a chat message (SmolLM2's chat template has no
slot for it; multi-agent SDKs send it, refusing it would break them) and `user` on an
embeddings request (OpenAI's end-user id; embeddings have no memory owner).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

logger = logging.getLogger(__name__)

# Error types (and the codes the caller sees) of the checks that name their field in
# `ctx["param"]`: a checked field inside a model validator has no location of its own.
UNSUPPORTED = "unsupported_parameter"
INVALID = "invalid_value"

# A field's value (and the whole request body) -> True when the value asks for nothing.
NoOp = Callable[[Any, Mapping[str, Any]], bool]

IGNORED_CHAT_FIELDS = frozenset({"store", "metadata", "service_tier", "safety_identifier", "prompt_cache_key"})


def empty(value: Any, _: Mapping[str, Any]) -> bool:
    """null, [] or {}: the field is present but asks for nothing."""
    return value is None or value == [] or value == {}


EMPTY_VALUES = {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}, {"type": "object", "maxProperties": 0}]}


class one_of:  # a predicate, named like `empty` and `without_tools`
    """null or one of the values that ask for nothing (`"none"`, `["text"]`)."""

    def __init__(self, *allowed: Any) -> None:
        self.allowed = allowed
        self.schema = {"enum": [None, *allowed]}

    def __call__(self, value: Any, _: Mapping[str, Any]) -> bool:
        return value is None or any(type(value) is type(a) and value == a for a in self.allowed)


def without_tools(value: Any, body: Mapping[str, Any]) -> bool:
    """`parallel_tool_calls` only qualifies tool calling: with no tools it changes nothing."""
    return not body.get("tools") and not body.get("functions")


def field_error(kind: str, param: str, reason: str) -> PydanticCustomError:
    """A validation error about field `param` raised from a model validator."""
    return PydanticCustomError(kind, "{reason}", {"param": param, "reason": reason})


class Unsupported:
    """A field OpenAI defines and memserve refuses, with the values that are no-ops
    (`accepts`: those values as a JSON Schema, for the OpenAPI document)."""

    def __init__(self, reason: str, no_op: NoOp = empty, accepts: dict[str, Any] | None = None) -> None:
        self.reason, self.no_op = reason, no_op
        self.accepts = accepts if accepts is not None else (
            EMPTY_VALUES if no_op is empty else no_op.schema if isinstance(no_op, one_of) else {})


_NO_TOOLS = "the served model has no tool-call parser, so memserve does not do tool or function calling"

TOOL_FIELDS: dict[str, Unsupported] = {
    "tools": Unsupported(_NO_TOOLS),
    "tool_choice": Unsupported(_NO_TOOLS, one_of("none")),
    "functions": Unsupported(_NO_TOOLS),
    "function_call": Unsupported(_NO_TOOLS, one_of("none")),
    "parallel_tool_calls": Unsupported(_NO_TOOLS, without_tools),
}

CHAT_FIELDS: dict[str, Unsupported] = {
    **TOOL_FIELDS,
    "audio": Unsupported("the served model produces text only"),
    "modalities": Unsupported("the served model produces text only", one_of(["text"])),
    "prediction": Unsupported("predicted outputs (speculative decoding from a given text) are not supported"),
    "web_search_options": Unsupported("memserve does not search the web", one_of()),  # even {} turns it on
    "reasoning_effort": Unsupported("the served model is not a reasoning model"),
    "verbosity": Unsupported("the served model has no verbosity control"),
}

COMPLETION_FIELDS: dict[str, Unsupported] = {
    "suffix": Unsupported("insertion (text after the completion) is not supported", one_of("")),
    # As the schema says it (`protocol.openai.CompletionRequest`): null, or an integer equal to n.
    "best_of": Unsupported("best_of (server-side candidates ranked by likelihood) is not supported; use n",
                           lambda value, body: value is None or (type(value) is int and value == body.get("n", 1)),
                           {"type": ["integer", "null"]}),
}

MESSAGE_FIELDS: dict[str, Unsupported] = {
    "tool_calls": Unsupported(_NO_TOOLS),
    "function_call": Unsupported(_NO_TOOLS),
    "tool_call_id": Unsupported(_NO_TOOLS),
    "audio": Unsupported("the served model takes text only"),
    "refusal": Unsupported("refusal messages are not supported; send the text as content"),
}


class StrictModel(BaseModel):
    """A request model that names every field it does not take (see the module docstring).

    Subclasses set `unsupported` (refused unless a no-op) and `ignored` (dropped, logged).
    """

    # JSON's types, as the schema says (no "5" for 5, no 0 for false); NaN and Infinity are not JSON.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    unsupported: ClassVar[Mapping[str, Unsupported]] = {}
    ignored: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """The schema names the fields taken only as no-ops, and the ignored ones, too: a
        request that sends them is valid (`extra="forbid"` alone would say it is not)."""
        json_schema = handler(schema)
        properties = handler.resolve_ref_schema(json_schema).setdefault("properties", {})
        for name, rule in cls.unsupported.items():
            properties.setdefault(name, {**rule.accepts, "description": f"not supported: {rule.reason}; accepted "
                                                                        "only as a value that asks for nothing"})
        for name in sorted(cls.ignored):
            properties.setdefault(name, {"description": "accepted and ignored: an OpenAI platform setting that "
                                                        "cannot change an answer here"})
        return json_schema

    @model_validator(mode="before")
    @classmethod
    def _screen_fields(cls, data: Any) -> Any:
        """Refuse unsupported values; drop no-op values and ignored fields before
        `extra="forbid"` sees them."""
        if not isinstance(data, dict) or not (cls.unsupported or cls.ignored):
            return data
        for name, rule in cls.unsupported.items():
            if name in data and not rule.no_op(data[name], data):
                raise field_error(UNSUPPORTED, name, rule.reason)
        dropped = [name for name in data if name in cls.ignored]
        if dropped:
            logger.debug("ignoring %s on a %s (no effect on memserve)", dropped, cls.__name__)
        return {k: v for k, v in data.items() if k not in cls.ignored and k not in cls.unsupported}
