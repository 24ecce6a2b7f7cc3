"""Typed settings for the whole application: the one place a knob is declared.

`configs/*.yaml` passes an `args:` mapping to `serve_app.builder:build_app`; Ray Serve
validates it into `AppSettings`. Deployment-level options (replicas, autoscaling,
`max_ongoing_requests`, actor resources) stay in the YAML `deployments:` section, where
Ray Serve owns them.

Secrets stay out of the YAML: `store.redis_url` and `cache.redis_url` may name environment
variables (`redis://:${MEMSERVE_REDIS_PASSWORD}@host:6379/0`), filled in by the replica
that opens the connection (serve_app/core/env.py), never at validation.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve_app.core.consolidation import ConsolidationSettings
from serve_app.core.decision import DecisionSettings
from serve_app.core.env import env_placeholders, expand_env
from serve_app.core.scoring import ScoringSettings
from serve_app.core.store import MemoryStore
from serve_app.core.stores import open_store
from serve_app.core.tiers import TierPolicy, TierRegistry, default_tier_policies
from serve_app.protocol.common import TENANT_NAME


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _RedisURL(_Section):
    """A section with a `redis_url` that may name environment variables, `${NAME}`
    (serve_app/core/env.py), e.g. `redis://:${MEMSERVE_REDIS_PASSWORD}@redis:6379/0`: the
    Serve config, and these settings, keep the placeholder; the replica that opens the
    connection fills it in from its own environment (`resolved_redis_url`). `$$` is a
    literal `$`; any other `$` fails validation. A password written into the URL itself is
    shown wherever the config is (the RayService object, the Ray dashboard): name a
    variable instead."""

    _url_field: ClassVar[str]

    redis_url: str | None = None
    # A Redis that stops answering (a hung server, a partition) must not hang the request
    # that is waiting on it: past this the call fails and the caller gets a 503.
    redis_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("redis_url")
    @classmethod
    def _placeholders_are_well_formed(cls, url: str | None) -> str | None:
        # The syntax only: the controller validating the config need not have the variables,
        # and an expanded URL must never be stored in the settings.
        if url is not None:
            env_placeholders(url, cls._url_field)
        return url

    def resolved_redis_url(self) -> str | None:
        """`redis_url` with `${NAME}` filled from this process's environment, to connect with
        (and never to log); EnvExpansionError, naming the variable, when one is not set."""
        return None if self.redis_url is None else expand_env(self.redis_url, self._url_field)


class LLMSettings(_Section):
    """The vLLM engine. `model` is a Hugging Face id/path or `bundled:<name>`."""

    model: str = "bundled:smollm2-135m-instruct"
    served_model_name: str = "smollm2-135m-instruct"
    max_model_len: int = 2048
    dtype: str = "bfloat16"
    enforce_eager: bool = True
    enable_prefix_caching: bool = True
    max_num_seqs: int = 32
    default_max_tokens: int = 256
    # CPU backend only: KV-cache size in GiB (sets VLLM_CPU_KVCACHE_SPACE).
    cpu_kvcache_space_gib: int = 1
    warmup: bool = True
    # Anything else AsyncEngineArgs takes (tensor_parallel_size, gpu_memory_utilization, ...).
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)


class EmbedderSettings(_Section):
    model: str = "bundled:all-MiniLM-L6-v2"
    served_model_name: str = "all-MiniLM-L6-v2"
    # Must match the model; FAISS indexes are built with it before the model is loaded.
    dimension: int = 384
    device: str = "cpu"
    max_batch_size: int = 64
    # A lone request waits this long for company; short, because it sits on the critical path.
    batch_wait_timeout_s: float = 0.001
    cache_size: int = 20_000
    max_input_chars: int = 8_000
    # onnx: ONNX Runtime over the model's ONNX export (CPU only; mean-pooling models);
    # torch: sentence-transformers (GPUs, any pooling). Same vectors (serve_app/encoders.py).
    backend: Literal["onnx", "torch"] = "onnx"
    # Threads of one forward pass; None: the backend's default, 2 for onnx (its threads
    # sleep rather than spin when idle), 1 for torch (beside a busy vLLM engine on two
    # cores, PyTorch with two threads took 480 ms for a query one thread encodes in 15 ms).
    num_threads: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _onnx_runs_on_cpu(self) -> EmbedderSettings:
        if self.backend == "onnx" and self.device != "cpu":
            raise ValueError(f"embedder.backend onnx runs on the CPU; device {self.device!r} needs backend torch")
        return self


class StoreSettings(_RedisURL):
    _url_field = "store.redis_url"

    backend: Literal["sqlite", "redis"] = "sqlite"
    # Relative paths are resolved against `AppSettings.data_dir`.
    sqlite_path: str = "memserve.sqlite3"
    # FULL: a commit survives power loss, not only a process crash.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    # Redis must run with appendonly yes + appendfsync always for durable acknowledgements.
    # `redis_url` (inherited) may name environment variables: `${MEMSERVE_REDIS_PASSWORD}`.
    redis_prefix: str = "memserve"


class VectorSearchSettings(_Section):
    num_shards: int = Field(default=2, ge=1, le=64)
    max_loaded_users: int = Field(default=50, ge=1)
    # Changed user indexes are snapshotted this often (and when evicted); 0 turns snapshots off.
    snapshot_interval_s: float = Field(default=30.0, ge=0)


class CacheSettings(_RedisURL):
    _url_field = "cache.redis_url"

    enabled: bool = True
    backend: Literal["memory", "redis"] = "memory"
    # `redis_url` (inherited) may name environment variables: `${MEMSERVE_REDIS_PASSWORD}`.
    ttl_s: float = Field(default=900.0, gt=0)
    max_entries: int = Field(default=10_000, ge=1)
    # Semantic layer: a request this similar to a cached one (same scope, model, sampling
    # and memory version) gets its answer; off by default.
    semantic: bool = False
    semantic_threshold: float = Field(default=0.95, gt=0, le=1)
    # Single-flight: how long followers wait for the leader's answer before generating.
    single_flight_wait_s: float = 60.0
    # Per-Orchestrator near cache of exact hits (serve_app/near_cache.py); 0 turns it off.
    local_ttl_s: float = Field(default=60.0, ge=0)
    local_max_entries: int = Field(default=2048, ge=1)


class MemorySettings(_Section):
    default_k: int = 5
    # Memories below this cosine similarity never reach the prompt.
    min_similarity: float = 0.25
    write_back: bool = True
    write_back_tier: str = "short_term"
    max_text_chars: int = 8_000
    # Every tier and its rules; `default_tier` is where a memory given no tier goes.
    tiers: dict[str, TierPolicy] = Field(default_factory=default_tier_policies)
    default_tier: str = "long_term"
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    consolidation: ConsolidationSettings = Field(default_factory=ConsolidationSettings)
    # A write this similar (cosine) to one of the user's memories updates it instead.
    dedup_threshold: float = Field(default=0.95, gt=0, le=1)
    # Connections: a search with include_connections returns up to this many memories
    # connected to its top k (0: none, and no related links are recorded); a new memory is
    # related to the user's memories at least this similar (cosine) when it is written.
    max_connections: int = Field(default=3, ge=0, le=20)
    connection_threshold: float = Field(default=0.75, gt=0, le=1)
    # Extraction (serve_app/extraction_service.py): "llm" turns the turns of a `messages`
    # write into short facts and decides ADD/UPDATE/DELETE/NOOP against the user's nearest
    # extracted facts, through the LLM deployment with JSON-schema-constrained answers. Off
    # by default: the bundled 135M model is weak at it (README, benchmarks/eval_extraction.py).
    extraction: Literal["off", "llm"] = "off"
    extraction_max_facts: int = Field(default=5, ge=1, le=20)
    extraction_max_tokens: int = Field(default=512, ge=16, le=4096)  # per LLM answer
    extraction_timeout_s: float = Field(default=60.0, gt=0)  # per LLM answer; past it the plain write stands

    @model_validator(mode="after")
    def _tiers_agree(self) -> MemorySettings:
        registry = self.tier_registry()  # checks every promote_to
        registry.check(self.default_tier)
        registry.check(self.write_back_tier)
        return self

    def tier_registry(self) -> TierRegistry:
        return TierRegistry(self.tiers)


class DocumentSettings(_Section):
    enabled: bool = True
    chunk_size: int = Field(default=500, ge=50)
    chunk_overlap: int = Field(default=50, ge=0)
    max_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    embed_batch: int = Field(default=64, ge=1)
    # Knowledge chunks put in a chat prompt, and the least cosine they need.
    k: int = Field(default=3, ge=1, le=20)
    min_similarity: float = 0.3


class RateLimitSettings(_Section):
    """A token bucket per API key: `burst` requests at once, refilled at `requests_per_s`."""

    requests_per_s: float = Field(gt=0)
    burst: int = Field(default=1, ge=1)


class TenantSettings(_Section):
    """One tenant (serve_app/tenants.py): its keys as SHA-256 hex digests, never the keys
    themselves (`printf %s "$KEY" | sha256sum`)."""

    # A plaintext key pasted here by mistake must not be repeated in an error (logs, dashboard).
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(pattern=TENANT_NAME)
    keys: list[str] = Field(default_factory=list)
    admin: bool = False
    rate_limit: RateLimitSettings | None = None

    @field_validator("keys")
    @classmethod
    def _digests_only(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if not re.fullmatch(r"[0-9a-fA-F]{64}", key):
                # Never echo the value: it may be a plaintext key pasted by mistake.
                raise ValueError("tenant keys must be SHA-256 hex digests (printf %s \"$KEY\" | sha256sum)")
        return [k.lower() for k in keys]


class ServerSettings(_Section):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # see TenantSettings

    # Clients must send one of these as `Authorization: Bearer <key>` (serve_app/auth.py);
    # more can come from MEMSERVE_API_KEYS (comma-separated), so secrets need not sit in
    # the YAML. These keys belong to the `default` tenant. None configured (here, in
    # `tenants` or in MEMSERVE_TENANT_KEYS): the app is open.
    api_keys: list[str] = Field(default_factory=list)
    # Tenants with hashed keys, an admin flag and a per-key rate limit (serve_app/tenants.py).
    tenants: list[TenantSettings] = Field(default_factory=list)
    max_body_bytes: int = 2 * 1024 * 1024
    system_prompt: str = "You are a helpful assistant. Answer briefly and accurately."
    # Per-stage deadlines (seconds); a late stage degrades the answer instead of failing it.
    # `POST /v1/memories/search` has their sum (embedding and search); past it, a 503.
    embed_timeout_s: float = 5.0
    search_timeout_s: float = 5.0
    cache_timeout_s: float = 1.0
    decision_timeout_s: float = 2.0
    # How long a chat waits for the LLM to start its answer (queueing for a slot included;
    # while no LLM replica is up, e.g. its engine restarting, the handle waits for one):
    # past it the answer is a 503 `unavailable` with Retry-After, never an endless wait.
    generation_start_timeout_s: float = Field(default=60.0, gt=0)
    # Independent stages run concurrently; false runs them one after another (for
    # benchmarks and debugging; a request may also send memserve.fanout).
    fanout: bool = True

    def all_api_keys(self) -> tuple[str, ...]:
        from_env = [k.strip() for k in os.environ.get("MEMSERVE_API_KEYS", "").split(",") if k.strip()]
        return tuple(dict.fromkeys([*self.api_keys, *from_env]))

    @field_validator("tenants")
    @classmethod
    def _tenants_distinct(cls, tenants: list[TenantSettings]) -> list[TenantSettings]:
        names = [t.name for t in tenants]
        if len(set(names)) != len(names):
            raise ValueError("tenant names must be unique")
        digests = [k for t in tenants for k in t.keys]
        if len(set(digests)) != len(digests):
            raise ValueError("a key digest may belong to one tenant only")
        return tenants


class AppSettings(_Section):
    # Errors name the field but not its value: a tenant key pasted in plaintext is not echoed.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    decision: DecisionSettings = Field(default_factory=DecisionSettings)
    documents: DocumentSettings = Field(default_factory=DocumentSettings)
    data_dir: str = "./data"
    llm: LLMSettings = Field(default_factory=LLMSettings)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    vector_search: VectorSearchSettings = Field(default_factory=VectorSearchSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    server: ServerSettings = Field(default_factory=ServerSettings)

    def resolve_path(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.data_dir).expanduser().resolve() / p

    def open_store(self) -> MemoryStore:
        """Called where the store is used (each replica): `${NAME}` in store.redis_url is
        filled from this process's environment here, not when the config is validated."""
        s = self.store
        redis_url = s.resolved_redis_url() if s.backend == "redis" else None
        return open_store(s.backend, sqlite_path=self.resolve_path(s.sqlite_path),
                          sqlite_synchronous=s.sqlite_synchronous, redis_url=redis_url, redis_prefix=s.redis_prefix,
                          redis_timeout_s=s.redis_timeout_s)
