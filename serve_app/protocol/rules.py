"""Checks the request models run in code, stated in their JSON Schema as well.

pydantic puts a field's type and `Field` constraints in the schema, not what a validator
function checks. The pieces here say those checks in JSON Schema next to the code that
runs them, so `/openapi.json` states every rule the app enforces
(`tests/unit/test_openapi_contract.py` holds the two to each other):

- `Checked(check, **keywords)`: an after-validator whose rule the keywords state;
- `rules(...)`: a model's `json_schema_extra` adding cross-field rules (`given`, `only_if`);
- `from_setting(...)`: a limit that is configuration (the tier names, the longest memory
  text), filled in from the replica's settings by `serve_app.openapi`;
- `Metadata`: free-form metadata, bounded in depth and size (a 400 past either).

Patterns are written for both dialects that read them: Python's `re` and ECMA 262 (what
JSON Schema validators use); `\\uXXXX` escapes and character classes mean the same in both.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import CoreSchema, core_schema

JsonSchema = dict[str, Any]

# Python's whitespace (`str.isspace`: what `strip()` removes). ECMA's `\s` is not the same
# set (it lacks U+001C-U+001F and U+0085 and has U+FEFF), so the class is spelt out.
WHITESPACE = r"\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Some text: a string this pattern finds something in is not blank after `strip()`.
NON_BLANK = f"[^{WHITESPACE}]"

# A chat message whose text (`ChatMessage.text()`: its content, or its parts' texts) is not blank.
MESSAGE_WITH_TEXT: JsonSchema = {
    "type": "object", "required": ["content"], "properties": {"content": {"anyOf": [
        {"type": "string", "pattern": NON_BLANK},
        {"type": "array", "contains": {"type": "object", "required": ["text"],
                                       "properties": {"text": {"type": "string", "pattern": NON_BLANK}}}},
    ]}},
}

SETTING = "x-memserve-setting"


class Checked:
    """`Annotated[T, Checked(check, pattern=...)]`: `check` runs after T's own validation
    (raising ValueError for a 400) and the keywords say in the schema what it allows."""

    def __init__(self, check: Callable[[Any], Any], **keywords: Any) -> None:
        self.check, self.keywords = check, keywords

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchema:
        json_schema = handler(schema)
        # Type-specific keywords (pattern, items, ...) constrain only values of their type,
        # so beside an `anyOf` (an optional field) they say exactly the same.
        json_schema.update(self.keywords)
        return json_schema


def from_setting(**keywords: str) -> JsonSchema:
    """`json_schema_extra` for limits that are configuration: keyword -> dotted settings
    path (`maxLength="memory.max_text_chars"`); `serve_app.openapi` puts in the value."""
    return {SETTING: keywords}


def digits_at_most(limit: int) -> str:
    """A pattern of the decimal strings (leading zeros allowed) of at most as many digits as
    `limit` whose value is at most `limit`: what `int(s) <= limit` accepts, as a regex."""
    text = str(limit)
    shorter = f"[0-9]{{1,{len(text) - 1}}}" if len(text) > 1 else None
    same = [f"{text[:i]}[0-{int(d) - 1}][0-9]{{{len(text) - i - 1}}}" for i, d in enumerate(text) if d != "0"]
    return "^(?:" + "|".join(filter(None, [shorter, *same, text])) + ")$"


def given(field: str) -> JsonSchema:
    """`field` is there and not null."""
    return {"required": [field], "properties": {field: {"not": {"type": "null"}}}}


def only_if(field: str, other: str, value: Any) -> JsonSchema:
    """`field` may be given (not null) only when `other` is `value`."""
    return {"anyOf": [{"not": {"required": [field]}}, {"properties": {field: {"type": "null"}}},
                      {"required": [other], "properties": {other: {"const": value}}}]}


def rules(*schemas: JsonSchema | Callable[[type[Any]], JsonSchema]) -> Callable[[JsonSchema, type[Any]], None]:
    """A model's `json_schema_extra`: every rule (a schema, or one built from the model
    class) must hold, besides the fields' own."""

    def extra(schema: JsonSchema, cls: type[Any]) -> None:
        schema.setdefault("allOf", []).extend(rule(cls) if callable(rule) else rule for rule in schemas)

    return extra


# --------------------------------------------------------------------------- metadata

MAX_METADATA_DEPTH = 8
MAX_METADATA_BYTES = 16 * 1024


def check_metadata(value: Mapping[str, Any]) -> Mapping[str, Any]:
    """Free-form, but bounded: at most `MAX_METADATA_DEPTH` levels of objects and arrays
    (the metadata object is level 1), at most `MAX_METADATA_BYTES` as JSON, and no NaN or
    Infinity (JSON has neither; they would come back as null)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping | list):
            if depth > MAX_METADATA_DEPTH:
                raise ValueError(f"metadata may be nested at most {MAX_METADATA_DEPTH} levels deep")
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, Mapping) else item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("metadata may not contain NaN or Infinity")
    if len(json.dumps(value, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata may be at most {MAX_METADATA_BYTES} bytes as JSON")
    return value


Metadata = Annotated[
    dict[str, Any], Checked(check_metadata),
    Field(description=f"free-form JSON object: at most {MAX_METADATA_DEPTH} levels of objects and arrays deep, "
                      f"{MAX_METADATA_BYTES} bytes as JSON, no NaN or Infinity"),
]
