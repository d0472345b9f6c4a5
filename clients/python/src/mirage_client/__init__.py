"""Python client for the MIRAGE-RS HTTP API.

`Client` / `AsyncClient` cover every route; errors are `MirageError` subclasses carrying the
server's RFC 9457 problem. `mirage_client.langchain` and `mirage_client.llamaindex` hold the
retrievers (they import their framework only when used).
"""

from .client import AsyncClient, Client, encode_image, rag_messages
from .errors import (
    Conflict,
    Forbidden,
    InvalidImage,
    InvalidRequest,
    MirageError,
    NotFound,
    NotSupportedByModel,
    Overloaded,
    PayloadTooLarge,
    StoreError,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "AsyncClient", "Client", "encode_image", "rag_messages", "Conflict", "Forbidden",
    "InvalidImage", "InvalidRequest", "MirageError", "NotFound", "NotSupportedByModel",
    "Overloaded", "PayloadTooLarge", "StoreError", "Unauthorized", "Unavailable",
]
__version__ = "0.1.0"
