"""RFC 9457 problems from the server, as exceptions.

Every error response of the server is `application/problem+json` with a stable `type`
(`urn:mirage:problem:<slug>`), a `title`, a `detail` saying what to fix, and the `request_id`.
`MirageError.from_response` picks the subclass of the slug, so callers can catch what they handle.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

PREFIX = "urn:mirage:problem:"


class MirageError(Exception):
    """A problem the server answered with (or a response that was not one)."""

    slug = "unknown"

    def __init__(self, status: int, type_: str, title: str, detail: str,
                 request_id: Optional[str] = None, body: Optional[Dict[str, Any]] = None):
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.type = type_
        self.title = title
        self.detail = detail
        self.request_id = request_id
        self.body = body or {}

    @classmethod
    def from_response(cls, status: int, body: Any, request_id: Optional[str] = None) -> "MirageError":
        if not isinstance(body, dict) or "type" not in body:
            return MirageError(status, "about:blank", "Unexpected response", str(body)[:500], request_id)
        type_ = str(body.get("type", ""))
        slug = type_[len(PREFIX):] if type_.startswith(PREFIX) else type_
        klass: Type[MirageError] = _BY_SLUG.get(slug, MirageError)
        return klass(status, type_, str(body.get("title", "")), str(body.get("detail", "")),
                     body.get("request_id") or request_id, body)


class InvalidRequest(MirageError):
    """422: well-formed but wrong (types, ranges, missing fields); also invalid JSON (400)."""
    slug = "invalid-request"


class InvalidImage(MirageError):
    """422: an image could not be decoded, or its format is not supported."""
    slug = "invalid-image"


class NotFound(MirageError):
    """404: no such collection, item, model or route."""
    slug = "not-found"


class Conflict(MirageError):
    """409: the collection exists with another model or store, or a model is still needed."""
    slug = "conflict"


class NotSupportedByModel(MirageError):
    """409: the server cannot serve this (no text bank for audit, no reranker)."""
    slug = "not-supported-by-model"


class PayloadTooLarge(MirageError):
    """413: the body is above the server's limit."""
    slug = "payload-too-large"


class Unauthorized(MirageError):
    """401: missing or unknown API key."""
    slug = "unauthorized"


class Forbidden(MirageError):
    """403: the key's scope does not allow this route."""
    slug = "forbidden"


class Overloaded(MirageError):
    """429: the inference queue is full (retried with Retry-After before it is raised)."""
    slug = "overloaded"


class Unavailable(MirageError):
    """503: not ready, timed out, or the store is down (retried before it is raised)."""
    slug = "not-ready"


class StoreError(MirageError):
    """502: the vector store refused the request."""
    slug = "store-error"


_BY_SLUG: Dict[str, Type[MirageError]] = {
    "invalid-request": InvalidRequest,
    "invalid-json": InvalidRequest,
    "unsupported-media-type": InvalidRequest,
    "invalid-image": InvalidImage,
    "unsupported-image": InvalidImage,
    "not-found": NotFound,
    "method-not-allowed": NotFound,
    "conflict": Conflict,
    "not-supported-by-model": NotSupportedByModel,
    "payload-too-large": PayloadTooLarge,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "overloaded": Overloaded,
    "not-ready": Unavailable,
    "timeout": Unavailable,
    "store-unavailable": Unavailable,
    "store-error": StoreError,
}
