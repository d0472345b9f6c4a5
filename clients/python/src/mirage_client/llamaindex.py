"""LlamaIndex integration: `MirageRetriever`, a `BaseRetriever` over `/v1/search` returning
`NodeWithScore` — a `TextNode` for text hits and an `ImageNode` (with the server's thumbnail URL)
for image hits; metadata as in `mirage_client.langchain.hit_metadata`."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle, TextNode

from .client import AsyncClient, Client, _Routes


def _node(hit: Dict[str, Any], routes: _Routes) -> NodeWithScore:
    meta: Dict[str, Any] = dict(hit.get("payload") or {})
    meta.update(score=hit["score"], provenance=hit.get("provenance"))
    if hit.get("passage"):
        meta["passage"] = hit["passage"]
    if hit.get("image") and not hit.get("text"):
        node = ImageNode(id_=hit["id"], image_url=routes.media_url(hit["image"]),
                         metadata=dict(meta, image=hit["image"]))
    else:
        if hit.get("image"):
            meta.update(image=hit["image"], image_url=routes.media_url(hit["image"]))
        node = TextNode(id_=hit["id"], text=hit.get("text") or "", metadata=meta)
    return NodeWithScore(node=node, score=hit["score"])


class MirageRetriever(BaseRetriever):
    """Nodes for a query from a MIRAGE collection; `search_options` go to `/v1/search`."""

    def __init__(self, client: Client, collection: str, similarity_top_k: int = 4,
                 async_client: Optional[AsyncClient] = None, **search_options: Any):
        super().__init__()
        self._client = client
        self._async_client = async_client
        self._collection = collection
        self._k = similarity_top_k
        self._options = search_options

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        answer = self._client.search(self._collection, text=query_bundle.query_str,
                                     limit=self._k, **self._options)
        return [_node(h, self._client) for h in answer["hits"]]

    async def _aretrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        if self._async_client is None:
            return self._retrieve(query_bundle)
        answer = await self._async_client.search(self._collection, text=query_bundle.query_str,
                                                 limit=self._k, **self._options)
        return [_node(h, self._async_client) for h in answer["hits"]]
