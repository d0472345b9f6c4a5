"""LangChain integration: `MirageRetriever` (a `BaseRetriever` over `/v1/search`) and
`MirageEmbeddings` (an `Embeddings` over `/v1/embeddings`, queries embedded as queries).

Each hit becomes a `Document`: its text as `page_content`, and as `metadata` its payload, `id`,
`score`, `provenance` (collection, item, model, bundle sha256, store, index version, mode) and,
for image hits, `image` (the indexed reference) and `image_url` (a thumbnail URL of the server).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from .client import AsyncClient, Client, _Routes


def hit_metadata(hit: Dict[str, Any], routes: _Routes) -> Dict[str, Any]:
    """A search hit's metadata: payload, then id, score, provenance and image fields."""
    meta: Dict[str, Any] = dict(hit.get("payload") or {})
    meta.update(id=hit["id"], score=hit["score"], provenance=hit.get("provenance"))
    if hit.get("passage"):
        meta["passage"] = hit["passage"]
    if hit.get("image"):
        meta["image"] = hit["image"]
        meta["image_url"] = routes.media_url(hit["image"])
    return meta


class MirageRetriever(BaseRetriever):
    """Documents for a query from a MIRAGE collection.

    `search_options` go to `/v1/search` as they are (`mode`, `filter`, `fusion`, `target`,
    `rerank`, `group_by`, …). `client` serves `invoke`; `async_client` (optional) serves
    `ainvoke`, which otherwise runs the blocking client in a thread.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    client: Client
    collection: str
    k: int = 4
    search_options: Dict[str, Any] = Field(default_factory=dict)
    async_client: Optional[AsyncClient] = None

    def _documents(self, answer: Dict[str, Any]) -> List[Document]:
        return [
            Document(page_content=h.get("text") or "", metadata=hit_metadata(h, self.client))
            for h in answer["hits"]
        ]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> List[Document]:
        answer = self.client.search(self.collection, text=query, limit=self.k, **self.search_options)
        return self._documents(answer)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> List[Document]:
        if self.async_client is None:
            return await super()._aget_relevant_documents(query, run_manager=run_manager)
        answer = await self.async_client.search(
            self.collection, text=query, limit=self.k, **self.search_options
        )
        return self._documents(answer)


class MirageEmbeddings(Embeddings):
    """Embeddings of a MIRAGE model: documents with its document tower, queries with its query
    tower where it has one (`input_type`)."""

    def __init__(self, client: Client, model: Optional[str] = None):
        self.client = client
        self.model = model

    def embed_documents(self, texts: List[str]) -> List[List[float]]:
        return self.client.embed_texts(texts, model=self.model, input_type="document")

    def embed_query(self, text: str) -> List[float]:
        return self.client.embed_texts([text], model=self.model, input_type="query")[0]
