import asyncio
import math

import httpx
import pytest

from mirage_client import (
    AsyncClient,
    Client,
    InvalidImage,
    InvalidRequest,
    MirageError,
    NotFound,
    Unavailable,
    rag_messages,
)

from conftest import png


def unit(v):
    return abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-4


def test_info_models_and_probes(client):
    info = client.info()
    models = client.models()
    assert models[0]["id"] == info["model_id"] and models[0]["default"] is True
    assert client.health()["status"] == "pass"
    assert client.ready()["status"] in ("pass", "warn")
    assert "mirage_build_info" in client.metrics()


def test_embeddings_of_texts_and_images(client, tmp_path):
    dim = client.info()["embed_dim"]
    vs = client.embed_texts(["pleural effusion", "normal chest"])
    assert len(vs) == 2 and all(len(v) == dim and unit(v) for v in vs)
    q = client.embed_texts(["pleural effusion"], input_type="query")[0]
    assert len(q) == dim
    path = tmp_path / "x.png"
    path.write_bytes(png(3))
    a, b = client.embed_images([png(3), path])
    assert a == pytest.approx(b, abs=1e-6), "bytes and a path of the same file embed alike"
    raw = client.embeddings("lung", encoding_format="base64")
    assert isinstance(raw["data"][0]["embedding"], str)


def test_problems_are_typed_exceptions(client, collection):
    with pytest.raises(NotFound) as e:
        client.embed_texts(["x"], model="no-such-model")
    assert "not loaded" in e.value.detail and e.value.status == 404
    assert e.value.type == "urn:mirage:problem:not-found" and e.value.request_id
    with pytest.raises(NotFound):
        client.search("no-such-collection", text="x")
    with pytest.raises(InvalidRequest) as e:
        client.search(collection, text="x", limit=0)
    assert e.value.status == 422
    with pytest.raises(InvalidRequest):
        client.classify(png(1), [])
    with pytest.raises(InvalidImage):
        client.classify(b"not an image at all", ["a", "b"])


def test_search_filters_images_vectors_and_rag(client, collection):
    r = client.search(collection, text="pleural effusion on the left with atelectasis", mode="dense", exact=True)
    assert r["hits"][0]["id"] == "r3"
    assert r["hits"][0]["provenance"]["collection"] == collection
    r = client.search(collection, text="chest", filter={"must": [{"key": "modality", "match": {"value": "CT"}}]})
    assert {h["id"] for h in r["hits"]} <= {"r3"}
    r = client.search(collection, image=png(1), target="image", limit=2)
    assert r["hits"][0]["id"] == "img1"
    v = client.embed_texts(["axial brain mri with a small lesion"])[0]
    assert client.search(collection, vector=v, exact=True)["hits"][0]["id"] == "r4"
    assert client.search(collection, text="effusion", mode="lexical")["hits"][0]["id"] in ("r2", "r3")
    rag = client.rag_context(collection, question="pleural effusion left", min_score=-1.0, k=2)
    assert not rag["abstained"] and rag["citations"]
    msgs = rag_messages(rag, "What is on the left?", client=client, system="Cite sources.")
    assert msgs[0]["role"] == "system" and msgs[1]["content"][-1]["text"] == "What is on the left?"
    assert any(p["type"] == "text" and "[1]" in p["text"] for p in msgs[1]["content"])
    rag_img = client.rag_context(collection, image=png(2), target="image", min_score=-1.0, k=1)
    parts = rag_messages(rag_img, "Describe it.", client=client)[0]["content"]
    url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
    resp = httpx.get(url)
    assert resp.status_code == 200 and resp.content[:8] == b"\x89PNG\r\n\x1a\n"
    abstained = client.rag_context(collection, question="pleural effusion", min_score=1.0)
    assert abstained["abstained"]
    assert "No indexed source" in rag_messages(abstained, "q")[0]["content"][0]["text"]


def test_rerank_and_classify(client):
    r = client.rerank("pleural effusion", ["effusion on the left", "brain lesion", "normal"], top_n=2,
                      return_documents=True)
    scores = [x["relevance_score"] for x in r["results"]]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)
    c = client.classify(png(4), ["pneumonia", "normal"], multi_label=True)
    assert {l["label"] for l in c["labels"]} == {"pneumonia", "normal"}


def test_collections_lifecycle(client):
    name = "pyclient-tmp"
    client.create_collection(name, search_mode="dense")
    assert client.get_collection(name)["name"] == name
    assert name in [c["name"] for c in client.collections()["collections"]]
    client.upsert(name, [{"id": "a", "text": "left lung"}, {"id": "b", "text": "right lung"}])
    assert client.delete_items(name, ids=["a"])["deleted"] == 1
    client.delete_collection(name)
    with pytest.raises(NotFound):
        client.get_collection(name)


def test_async_client(url, collection):
    async def run():
        async with AsyncClient(url) as c:
            r = await c.search(collection, text="axial brain mri with a small lesion", mode="dense", exact=True)
            v = await c.embed_texts(["lung"])
            return r, v
    r, v = asyncio.run(run())
    assert r["hits"][0]["id"] == "r4" and len(v) == 1


def test_retries_on_429_and_503_then_raise():
    calls = []

    def handler(request):
        calls.append(request.url.path)
        if len(calls) == 1:
            return httpx.Response(429, headers={"retry-after": "0"},
                                 json={"type": "urn:mirage:problem:overloaded", "title": "t", "detail": "d"})
        return httpx.Response(200, json={"status": "pass"})

    c = Client("http://mirage.test", transport=httpx.MockTransport(handler))
    assert c.health() == {"status": "pass"} and len(calls) == 2

    def down(request):
        calls.append(1)
        return httpx.Response(503, headers={"retry-after": "0"},
                              json={"type": "urn:mirage:problem:not-ready", "title": "t", "detail": "warming up"})

    calls.clear()
    c = Client("http://mirage.test", transport=httpx.MockTransport(down), max_retries=2)
    with pytest.raises(Unavailable) as e:
        c.ready()
    assert len(calls) == 3 and e.value.detail == "warming up"

    async def run():
        calls.clear()
        a = AsyncClient("http://mirage.test", transport=httpx.MockTransport(down), max_retries=1)
        with pytest.raises(Unavailable):
            await a.request("GET", "/ready")
        return len(calls)

    assert asyncio.run(run()) == 2


def test_snapshot_download_and_restore(client, collection, tmp_path):
    snap = client.create_snapshot(collection)
    assert snap["collection"] == collection and snap["items"] >= 1
    assert any(s["name"] == snap["name"] for s in client.snapshots()["snapshots"])
    path = tmp_path / snap["name"]
    assert client.download_snapshot(snap["name"], str(path)) == snap["size_bytes"]
    import hashlib
    assert hashlib.sha256(path.read_bytes()).hexdigest() == snap["sha256"]
    copy = f"{collection}-restored"
    restored = client.restore_snapshot(snap["name"], as_name=copy)
    assert restored["name"] == copy and restored["items"] == snap["items"]
    with pytest.raises(MirageError) as e:
        client.restore_snapshot(snap["name"], as_name=copy)
    assert e.value.status == 409
    with pytest.raises(NotFound):
        client.download_snapshot("absent-1.mirage-snapshot.tar", str(tmp_path / "x"))
    client.delete_collection(copy)
    client.delete_snapshot(snap["name"])
