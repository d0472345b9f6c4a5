import asyncio

from mirage_client import AsyncClient
from conftest import png


def test_langchain_retriever_and_embeddings(client, url, collection):
    from langchain_core.documents import Document
    from mirage_client.langchain import MirageEmbeddings, MirageRetriever

    retriever = MirageRetriever(client=client, collection=collection, k=3,
                                search_options={"mode": "dense", "exact": True})
    docs = retriever.invoke("pleural effusion on the left with atelectasis")
    assert isinstance(docs[0], Document) and docs[0].metadata["id"] == "r3"
    meta = docs[0].metadata
    assert meta["modality"] == "CT" and meta["year"] == 2022, "payload fields are metadata"
    assert meta["provenance"]["collection"] == collection and isinstance(meta["score"], float)
    assert docs[0].page_content.startswith("pleural effusion")

    filtered = MirageRetriever(client=client, collection=collection,
                               search_options={"filter": {"must": [{"key": "modality", "match": {"value": "MR"}}]}})
    assert {d.metadata["id"] for d in filtered.invoke("brain")} <= {"r4", "img2"}

    images = MirageRetriever(client=client, collection=collection, k=1,
                             search_options={"target": "image"})
    hit = images.invoke("a radiograph")[0]
    assert hit.metadata["image_url"].startswith(url) and "/v1/media?" in hit.metadata["image_url"]

    async_retriever = MirageRetriever(client=client, async_client=AsyncClient(url),
                                      collection=collection, search_options={"mode": "dense", "exact": True})
    docs = asyncio.run(async_retriever.ainvoke("axial brain mri with a small lesion"))
    assert docs[0].metadata["id"] == "r4"

    emb = MirageEmbeddings(client)
    d = emb.embed_documents(["left lung", "right lung"])
    q = emb.embed_query("left lung")
    assert len(d) == 2 and len(q) == len(d[0])


def test_llamaindex_retriever(client, url, collection):
    from llama_index.core.schema import ImageNode, NodeWithScore, TextNode
    from mirage_client.llamaindex import MirageRetriever

    retriever = MirageRetriever(client, collection, similarity_top_k=2, mode="dense", exact=True)
    nodes = retriever.retrieve("axial brain mri with a small lesion")
    assert isinstance(nodes[0], NodeWithScore) and isinstance(nodes[0].node, TextNode)
    assert nodes[0].node.node_id == "r4" and nodes[0].node.metadata["modality"] == "MR"
    assert nodes[0].score == nodes[0].node.metadata["score"]

    images = MirageRetriever(client, collection, similarity_top_k=1, target="image")
    node = images.retrieve("a radiograph")[0].node
    assert isinstance(node, ImageNode) and node.image_url.startswith(url)

    async_retriever = MirageRetriever(client, collection, async_client=AsyncClient(url),
                                      similarity_top_k=1, mode="dense", exact=True)
    nodes = asyncio.run(async_retriever.aretrieve("pleural effusion on the left with atelectasis"))
    assert nodes[0].node.node_id == "r3"
