"""The sampling part of the OpenAI protocol, shared by chat and text completions: the
request fields that shape generation, `response_format`, and the logprobs shapes of
responses.

Bounds are OpenAI's where OpenAI has them (penalties in [-2, 2], `logit_bias` in
[-100, 100] over at most 300 tokens, 4 stop sequences, `top_logprobs` <= 20), so a
request OpenAI accepts is accepted here and the engine never sees a value it would
reject; `repetition_penalty`, `top_k` and `min_p` are vLLM's extensions, as vLLM's own
server offers them. `n` is capped at `MAX_N` (each choice is a full generation).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from jsonschema import Draft202012Validator  # a dependency of ray[serve] and vLLM
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve_app.generation import TokenLogprob
from serve_app.protocol.common import MAX_USER_CHARS, UserCheck
from serve_app.protocol.rules import from_setting, only_if, rules
from serve_app.protocol.strict import INVALID, StrictModel, field_error

MAX_N = 8
MAX_STOP = 4
MAX_LOGIT_BIAS = 300
MAX_TOP_LOGPROBS = 20
MAX_SEED = 2**63 - 1


# --------------------------------------------------------------------------- response_format


class JsonSchemaSpec(StrictModel):
    """OpenAI's `json_schema` object. The schema is always enforced (vLLM structured
    outputs constrain every token), so `strict: false` gets the stricter behaviour."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        """A broken schema is the caller's 400 here, not an engine failure mid-request."""
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return schema


class ResponseFormat(StrictModel):
    """`text` (no constraint), `json_object` (any JSON object) or `json_schema` (an object
    valid against `json_schema.schema`): vLLM structured outputs constrain every token."""

    model_config = ConfigDict(json_schema_extra=rules({"anyOf": [  # `_schema_with_its_type`
        {"required": ["json_schema"],
         "properties": {"type": {"const": "json_schema"}, "json_schema": {"type": "object"}}},
        {"properties": {"type": {"enum": ["text", "json_object"]}, "json_schema": {"type": "null"}}},
    ]}))

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise field_error(INVALID, "json_schema", "json_schema is required with, and only allowed with, "
                                                      "type json_schema")
        return self


# --------------------------------------------------------------------------- request fields


class StreamOptions(StrictModel):
    """`include_obfuscation` is accepted as a no-op: it asks OpenAI to pad stream events
    against side channels, and memserve sends no padding either way."""

    include_usage: bool = False
    include_obfuscation: bool | None = None


# The model validators' rules, in the schema (each request model adds its own).
SAMPLING_RULES = (only_if("stream_options", "stream", True),)
# A generation cannot be longer than the model's context (the engine answers 400).
TOKEN_LIMIT = from_setting(maximum="llm.max_model_len")


class SamplingFields(StrictModel):
    """Fields chat and text completions share (each adds its own, and `memserve`)."""

    model_config = ConfigDict(json_schema_extra=rules(*SAMPLING_RULES))

    # Any other name is a 404 `model_not_found` (`Runtime.check_model`), as OpenAI answers.
    model: str = Field(json_schema_extra=from_setting(enum="llm.served_model_name"))
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1, json_schema_extra=TOKEN_LIMIT)
    stop: str | list[str] | None = Field(default=None, json_schema_extra={
        "minLength": 1, "maxItems": MAX_STOP, "items": {"type": "string", "minLength": 1}})
    seed: int | None = Field(default=None, ge=-MAX_SEED - 1, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=MAX_N)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0, allow_inf_nan=False)
    top_k: int | None = Field(default=None, ge=-1, description="0 or -1: all tokens (vLLM extension)")
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    logit_bias: dict[str, float] | None = Field(default=None, json_schema_extra={
        "maxProperties": MAX_LOGIT_BIAS, "propertyNames": {"pattern": "^[0-9]+$"},
        "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100}})
    user: Annotated[str | None, UserCheck] = Field(default=None, min_length=1, max_length=MAX_USER_CHARS)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> list[str] | None:
        if v is None:
            return None
        stops = [v] if isinstance(v, str) else v
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    @field_validator("logit_bias")
    @classmethod
    def _token_biases(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        """Keys are token ids (JSON keys are strings); whether an id is in the vocabulary
        only the engine knows, and it answers 400 for one that is not."""
        if v is None:
            return None
        if len(v) > MAX_LOGIT_BIAS:
            raise ValueError(f"at most {MAX_LOGIT_BIAS} tokens may be biased")
        if any(not (key.isascii() and key.isdigit()) for key in v):  # not "²": int() refuses it
            raise ValueError("keys must be token ids (non-negative integers)")
        if any(not -100.0 <= bias <= 100.0 for bias in v.values()):
            raise ValueError("biases must be between -100 and 100")
        return v

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise field_error(INVALID, "stream_options", "stream_options is only allowed when stream is true")
        return self

    def token_biases(self) -> dict[int, float] | None:
        return {int(k): b for k, b in self.logit_bias.items()} if self.logit_bias else None

    def stops(self) -> list[str] | None:
        return [self.stop] if isinstance(self.stop, str) else self.stop

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


# --------------------------------------------------------------------------- logprobs in responses


def _utf8(token: str) -> list[int]:
    return list(token.encode("utf-8", errors="replace"))


class TopLogprobOut(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobOut(TopLogprobOut):
    top_logprobs: list[TopLogprobOut] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    """A chat choice's `logprobs`: one entry per generated token."""

    content: list[TokenLogprobOut] | None = None

    @classmethod
    def of(cls, tokens: list[TokenLogprob] | None) -> ChatLogprobs | None:
        if tokens is None:
            return None
        return cls(content=[
            TokenLogprobOut(token=t.token, logprob=t.logprob, bytes=_utf8(t.token), top_logprobs=[
                TopLogprobOut(token=a.token, logprob=a.logprob, bytes=_utf8(a.token)) for a in t.top
            ]) for t in tokens
        ])


class CompletionLogprobs(BaseModel):
    """A text completion choice's `logprobs` (the legacy parallel-lists shape). Each
    `top_logprobs` entry holds the top tokens plus the chosen one, as OpenAI documents."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)

    @classmethod
    def of(cls, tokens: list[TokenLogprob] | None, offset: int = 0) -> CompletionLogprobs | None:
        """`offset`: where the first token starts in the choice's text (after any echo)."""
        if tokens is None:
            return None
        out = cls()
        for t in tokens:
            out.tokens.append(t.token)
            out.token_logprobs.append(t.logprob)
            out.top_logprobs.append({**{a.token: a.logprob for a in t.top}, t.token: t.logprob})
            out.text_offset.append(offset)
            offset += len(t.token)
        return out
