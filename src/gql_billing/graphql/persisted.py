"""Automatic persisted queries: Apollo's APQ protocol, so a client sends a document's hash
instead of the document once the server has seen it.

A request with `extensions.persistedQuery = {"version": 1, "sha256Hash": ...}`:

- and no query: the document stored under that hash runs; an unknown hash answers
  `PersistedQueryNotFound` (HTTP 200 for application/json), and the client sends it again with
  the document;
- and a query: the hash must be the document's SHA-256 (else HTTP 400), and the document is
  stored once it has parsed and validated, then runs.

The store is a bounded LRU per process: a miss after eviction (or on another worker) costs
the client one round trip more, never a wrong answer, since a hash names one document.

Documents are kept per organization (per token for service tokens, which have none): a hash
runs only for the organization that sent its document in full. Otherwise one organization
could learn, by asking for a hash, that another stored a document, and documents can carry
names and references in their literals.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLError
from strawberry.types import ExecutionResult

from ..auth import Principal

NOT_FOUND = ("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND")
NOT_SUPPORTED = ("PersistedQueryNotSupported", "PERSISTED_QUERY_NOT_SUPPORTED")
HASH_MISMATCH = "provided sha does not match query"
SUPPORTED_VERSION = 1


class PersistedQueryRefused(Exception):
    """A malformed persisted-query request: the whole HTTP request is refused (400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class PersistedQueryMiss(ExecutionResult):
    """The operation's answer when its hash is unknown, or when the store is turned off:
    Apollo's message and code, which clients look for to send the document again (or to
    stop using hashes)."""

    @classmethod
    def build(cls, message_and_code: tuple[str, str]) -> PersistedQueryMiss:
        message, code = message_and_code
        return cls(data=None, errors=[GraphQLError(message, extensions={"code": code})])


@dataclass(frozen=True)
class Resolved:
    """The document to run; `sha256` when it came with its hash, to store once it validates."""

    query: str | None
    sha256: str | None = None
    miss: PersistedQueryMiss | None = None


def persisted_owner(principal: Principal) -> str:
    """Whose persisted documents a caller may run: its organization's, or for a service token
    (no organization) its own."""
    if principal.organization_id is not None:
        return f"organization:{principal.organization_id}"
    return f"token:{principal.token_id}"


class PersistedQueries:
    """The (owner, hash) -> document store: at most `size` documents in all, least recently
    used out first; size 0 turns the protocol off (clients are told
    `PersistedQueryNotSupported`). `owner` is whoever may run the document by its hash."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._documents: OrderedDict[tuple[str, str], str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._documents)

    def lookup(self, owner: str, sha256: str) -> str | None:
        document = self._documents.get((owner, sha256))
        if document is not None:
            self._documents.move_to_end((owner, sha256))
        return document

    def store(self, owner: str, sha256: str, document: str) -> None:
        if self.size <= 0:
            return
        self._documents[(owner, sha256)] = document
        self._documents.move_to_end((owner, sha256))
        while len(self._documents) > self.size:
            self._documents.popitem(last=False)

    def resolve(self, owner: str, query: str | None, extensions: dict[str, Any] | None) -> Resolved:
        """The document a request of `owner` names; raises PersistedQueryRefused when it is
        malformed. Another owner's documents are unknown hashes here."""
        persisted = (extensions or {}).get("persistedQuery")
        if persisted is None:
            return Resolved(query)
        if not isinstance(persisted, dict):
            raise PersistedQueryRefused("extensions.persistedQuery must be an object")
        if persisted.get("version") != SUPPORTED_VERSION:
            raise PersistedQueryRefused("Unsupported persisted query version")
        sha256 = persisted.get("sha256Hash")
        if not isinstance(sha256, str) or not sha256:
            raise PersistedQueryRefused("extensions.persistedQuery.sha256Hash must be a string")
        if self.size <= 0:
            return Resolved(None, miss=PersistedQueryMiss.build(NOT_SUPPORTED))
        if query is None:
            document = self.lookup(owner, sha256)
            if document is None:
                return Resolved(None, miss=PersistedQueryMiss.build(NOT_FOUND))
            return Resolved(document)
        if hashlib.sha256(query.encode()).hexdigest() != sha256:
            raise PersistedQueryRefused(HASH_MISMATCH)
        return Resolved(query, sha256)
