"""Tenants: which tenant an API key acts for, and THE mapping from (tenant, user) to the
names memserve stores things under.

Keys. A tenant has API keys, an `admin` flag and an optional per-key rate limit. Keys are
only ever held as SHA-256 hex digests: `server.tenants[].keys` in the YAML are digests
(`printf %s "$KEY" | sha256sum`); `MEMSERVE_TENANT_KEYS="acme=KEY,globex=KEY"` and the
legacy `server.api_keys` / `MEMSERVE_API_KEYS` (keys of the `default` tenant, admin unless
`server.tenants` says otherwise) are hashed when the directory is built and the plaintext
is dropped; keys made at runtime (`POST /v1/tenants`) are returned once and stored as
digests in the store's key-value space `tenants`. Auth is on exactly when some key is
configured (YAML or environment); with none the app is open and every request is the
`default` tenant's, with admin rights.

Names. `Namespace` is the one place a tenant's names are made. The `default` tenant
keeps the names memserve always used (user `alice`, scopes `shared` and `user:alice`, KV
space `catalog`, cache keys as they are), so data written before tenants existed stays
readable with no migration. Any other tenant's names carry the tenant and `SEP`
(U+001F, a control character): `acme<SEP>alice`, `acme<SEP>shared`, `user:acme<SEP>alice`,
`catalog<SEP>acme`, cache keys under `acme<SEP>cache:`. User ids may not contain control
characters (`protocol.check_user`) and tenant names are `[A-Za-z0-9_-]`, so no user id of
one tenant can name another tenant's data, and no default-tenant name contains `SEP`.
Responses always show the caller's own ids (`external_user`, `external_scope`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from serve_app.core.store import MemoryStore
from serve_app.errors import APIError
from serve_app.protocol import TENANT_NAME
from serve_app.settings import RateLimitSettings, ServerSettings

logger = logging.getLogger(__name__)

SEP = "\x1f"
DEFAULT_TENANT = "default"
SPACE = "tenants"  # runtime tenants, by name, in the store's key-value space
ENV_VAR = "MEMSERVE_TENANT_KEYS"
LEGACY_ENV_VAR = "MEMSERVE_API_KEYS"  # keys of the default tenant, comma-separated
# How often a replica rereads the runtime tenants (a key made or a tenant deleted on
# another replica takes effect here within this long).
REFRESH_S = 5.0
# Where the auth middleware leaves the caller's Principal in the ASGI scope.
PRINCIPAL_KEY = "memserve.principal"

Source = Literal["config", "env", "runtime"]
M = TypeVar("M", bound=BaseModel)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Namespace:
    """A tenant's internal names. Callers give external ids (already validated: no
    control characters, no `__` prefix); this turns them into stored names and back."""

    tenant: str = DEFAULT_TENANT

    @property
    def is_default(self) -> bool:
        return self.tenant == DEFAULT_TENANT

    def user(self, user: str) -> str:
        return user if self.is_default else f"{self.tenant}{SEP}{user}"

    def external_user(self, internal: str) -> str | None:
        """The caller's id of a stored user name, or None if it is not this tenant's."""
        if self.is_default:
            return None if SEP in internal else internal
        prefix = f"{self.tenant}{SEP}"
        return internal[len(prefix):] if internal.startswith(prefix) else None

    def scoped(self, body: M) -> M:
        """A copy of a request model with its `user` field made internal."""
        user = getattr(body, "user", None)
        return body.model_copy(update={"user": self.user(user)}) if user else body

    @property
    def shared_scope(self) -> str:
        return "shared" if self.is_default else f"{self.tenant}{SEP}shared"

    def scope(self, scope: str) -> str:
        """A knowledge scope as the caller names it (`shared` or `user:<id>`, checked by
        `documents.parse_scope`) as it is stored."""
        return self.shared_scope if scope == "shared" else "user:" + self.user(scope.removeprefix("user:"))

    def external_scope(self, internal: str) -> str | None:
        if internal == self.shared_scope:
            return "shared"
        if internal.startswith("user:") and (user := self.external_user(internal[5:])) is not None:
            return f"user:{user}"
        return None

    def space(self, name: str) -> str:
        """A key-value space of the store that each tenant has its own of (the catalog)."""
        return name if self.is_default else f"{name}{SEP}{self.tenant}"

    @property
    def cache_prefix(self) -> str | None:
        """Prefix of every response-cache key and group of the tenant (None: unprefixed)."""
        return None if self.is_default else f"{self.tenant}{SEP}cache"

    @property
    def embedding_namespace(self) -> str | None:
        """The Embedder's cache is kept apart per tenant too (a hit would tell one tenant,
        by timing, that another embedded the same text)."""
        return None if self.is_default else self.tenant


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant a key belongs to and whether it may use admin routes.
    `key_id` (12 hex digits of the key's digest, for logs) is None when auth is off."""

    tenant: str
    admin: bool
    key_id: str | None = None

    @property
    def namespace(self) -> Namespace:
        return Namespace(self.tenant)


OPEN_PRINCIPAL = Principal(DEFAULT_TENANT, admin=True)


@dataclass(frozen=True)
class Tenant:
    name: str
    admin: bool = False
    rate_limit: RateLimitSettings | None = None
    digests: frozenset[str] = frozenset()
    source: Source = "config"
    created_at: float | None = None

    def public(self) -> dict[str, Any]:
        """What an admin may see: never key material, not even digests."""
        return {"name": self.name, "admin": self.admin, "keys": len(self.digests), "source": self.source,
                "rate_limit": self.rate_limit.model_dump() if self.rate_limit else None,
                "created_at": self.created_at}

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "admin": self.admin, "digests": sorted(self.digests),
                           "rate_limit": self.rate_limit.model_dump() if self.rate_limit else None,
                           "created_at": self.created_at})

    @classmethod
    def from_json(cls, text: str) -> Tenant | None:
        """A runtime tenant, or None for a deleted one (a tombstone keeps its name taken)."""
        raw = json.loads(text)
        if raw.get("deleted"):
            return None
        limit = raw.get("rate_limit")
        return cls(raw["name"], bool(raw.get("admin")), RateLimitSettings(**limit) if limit else None,
                   frozenset(raw.get("digests", [])), "runtime", raw.get("created_at"))


@dataclass(frozen=True)
class Resolved:
    """An authenticated key: its principal, its rate limit and its digest (the bucket)."""

    principal: Principal
    rate_limit: RateLimitSettings | None
    digest: str


@dataclass
class _Draft:
    admin: bool
    rate_limit: RateLimitSettings | None
    source: Source
    digests: set[str] = field(default_factory=set)


def static_tenants(server: ServerSettings, environ: Mapping[str, str] = os.environ) -> list[Tenant]:
    """The tenants of the configuration and the environment, every key hashed."""
    drafts = {t.name: _Draft(t.admin, t.rate_limit, "config", set(t.keys)) for t in server.tenants}
    from_env = [k.strip() for k in environ.get(LEGACY_ENV_VAR, "").split(",") if k.strip()]
    if legacy := [key_digest(k) for k in [*server.api_keys, *from_env]]:
        drafts.setdefault(DEFAULT_TENANT, _Draft(True, None, "config" if server.api_keys else "env"))
        drafts[DEFAULT_TENANT].digests.update(legacy)
    for name, digest in _env_keys(environ.get(ENV_VAR, "")):
        drafts.setdefault(name, _Draft(False, None, "env")).digests.add(digest)
    owners: dict[str, str] = {}
    for name, draft in drafts.items():
        for digest in draft.digests:
            if owners.setdefault(digest, name) != name:
                raise ValueError(f"one API key is given to two tenants: {owners[digest]} and {name}")
    return [Tenant(name, d.admin, d.rate_limit, frozenset(d.digests), d.source) for name, d in drafts.items()]


def _env_keys(value: str) -> list[tuple[str, str]]:
    """`tenant=key,...` as (tenant, digest); errors never show a key."""
    pairs = []
    for i, entry in enumerate(e.strip() for e in value.split(",")):
        if not entry:
            continue
        name, sep, key = (part.strip() for part in entry.partition("="))
        if not sep or not key or not re.fullmatch(TENANT_NAME, name):
            raise ValueError(f"{ENV_VAR}: entry {i + 1} is not tenant=key with a tenant name of [A-Za-z0-9_-]")
        pairs.append((name, key_digest(key)))
    return pairs


class TenantDirectory:
    """Resolves a bearer key to its tenant; lists, creates and deletes runtime tenants.

    Static tenants (YAML, environment) are fixed for the replica's life. Runtime tenants
    live in the store (`SPACE`) and are reread at most every `refresh_s`, so every replica
    agrees within that time; a deleted tenant's name stays taken (its data is not deleted,
    and a new tenant of that name must not inherit it). A miss does not force a reread,
    so invalid keys cannot make every request hit the store. Keys are looked up by their
    digest, so the time a lookup takes says nothing about any key.
    """

    def __init__(self, tenants: Iterable[Tenant], store: MemoryStore | None = None,
                 refresh_s: float = REFRESH_S) -> None:
        self._static = {t.name: t for t in tenants}
        self._static_keys = {d: t.name for t in self._static.values() for d in t.digests}
        self.store = store
        self.refresh_s = refresh_s
        # Auth is on exactly when keys are configured; runtime tenants only add to them.
        self.enabled = bool(self._static_keys)
        self._runtime: dict[str, Tenant] = {}
        self._runtime_keys: dict[str, str] = {}
        self._taken: set[str] = set()  # runtime names, deleted ones included
        self._version = -1
        self._checked_at = -math.inf

    @classmethod
    def from_settings(cls, server: ServerSettings, store: MemoryStore | None = None,
                      environ: Mapping[str, str] = os.environ) -> TenantDirectory:
        return cls(static_tenants(server, environ), store)

    async def resolve(self, token: str) -> Resolved | None:
        digest = key_digest(token)
        await self._refresh(force=False)
        name = self._static_keys.get(digest) or self._runtime_keys.get(digest)
        tenant = None if name is None else self._static.get(name) or self._runtime.get(name)
        if tenant is None:
            return None
        return Resolved(Principal(tenant.name, tenant.admin, digest[:12]), tenant.rate_limit, digest)

    async def tenants(self) -> list[Tenant]:
        await self._refresh(force=True)
        if not self.enabled:
            return [Tenant(DEFAULT_TENANT, admin=True)]  # the implicit one of an open app
        return sorted([*self._static.values(), *self._runtime.values()], key=lambda t: t.name)

    async def named(self, name: str) -> Tenant:
        """A tenant by name; 404 if there is none (an admin naming a tenant to act on)."""
        for tenant in await self.tenants():
            if tenant.name == name:
                return tenant
        raise APIError(404, f"no tenant {name}", "tenant", "tenant_not_found")

    async def create(self, name: str, admin: bool = False, rate_limit: RateLimitSettings | None = None,
                     ) -> tuple[Tenant, str]:
        """A new runtime tenant and its one key, returned once (only its digest is kept)."""
        if not self.enabled or self.store is None:
            raise APIError(409, "auth is off: configure server.tenants, MEMSERVE_TENANT_KEYS or MEMSERVE_API_KEYS "
                                "before creating tenants", "name", "auth_disabled")
        await self._refresh(force=True)
        if name in self._static or name in self._taken:
            raise APIError(409, f"the tenant name {name!r} is taken (names of deleted tenants stay taken)",
                           "name", "tenant_exists")
        key = "sk-mem-" + secrets.token_urlsafe(32)
        tenant = Tenant(name, admin, rate_limit, frozenset({key_digest(key)}), "runtime", time.time())
        await asyncio.to_thread(self.store.kv_put, SPACE, name, tenant.to_json())
        await self._refresh(force=True)
        logger.info("tenant %s created (admin=%s)", name, admin)
        return tenant, key

    async def delete(self, name: str) -> bool:
        """Revoke a runtime tenant's keys; its stored data stays (and its name taken)."""
        await self._refresh(force=True)
        if name in self._static:
            raise APIError(409, f"the tenant {name!r} is configured (YAML or environment); remove it there",
                           "name", "tenant_configured")
        if name not in self._runtime or self.store is None:
            return False
        tombstone = json.dumps({"name": name, "deleted": True, "deleted_at": time.time()})
        await asyncio.to_thread(self.store.kv_put, SPACE, name, tombstone)
        await self._refresh(force=True)
        logger.info("tenant %s deleted", name)
        return True

    async def _refresh(self, force: bool) -> None:
        if not self.enabled or self.store is None:
            return
        now = time.monotonic()
        if not force and now - self._checked_at < self.refresh_s:
            return
        self._checked_at = now
        version = await asyncio.to_thread(self.store.kv_version, SPACE)
        if version == self._version:
            return
        items = await asyncio.to_thread(self.store.kv_items, SPACE)
        runtime: dict[str, Tenant] = {}
        for name, value in items.items():
            try:
                tenant = Tenant.from_json(value)
            except (ValueError, KeyError, TypeError):
                logger.warning("ignoring an unreadable runtime tenant record %r", name)
                continue
            if tenant is not None and tenant.name not in self._static:
                runtime[tenant.name] = replace(
                    tenant, digests=frozenset(d for d in tenant.digests if d not in self._static_keys))
        self._runtime, self._taken, self._version = runtime, set(items), version
        self._runtime_keys = {d: t.name for t in runtime.values() for d in t.digests}
