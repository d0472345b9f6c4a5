"""Sync and async clients for every route of the MIRAGE-RS HTTP API (`openapi/openapi.json`).

Both clients build the same request bodies (`_Routes`), send them with `httpx`, retry 429 and
503 answers after their `Retry-After` delay (up to `max_retries` times), and raise the problem
of any other error as a typed `MirageError`. Images may be given as a path, `bytes`, or a string
(a data URI or bare base64) and travel base64-encoded in JSON.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import httpx

from .errors import MirageError

ImageInput = Union[str, bytes, "os.PathLike[str]"]
RETRYABLE = (429, 503)


def encode_image(image: ImageInput) -> str:
    """An image as the API takes it: bytes and file paths become base64; strings that are a
    data URI or are not an existing file pass through as base64 text."""
    if isinstance(image, (bytes, bytearray)):
        return base64.b64encode(bytes(image)).decode("ascii")
    if isinstance(image, os.PathLike) or (isinstance(image, str) and os.path.isfile(image)):
        with open(image, "rb") as f:
            return base64.b64encode(f.read()).decode("ascii")
    return str(image)


def _drop_none(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


class _Routes:
    """Request bodies and paths, shared by both clients."""

    def __init__(self, base_url: str, api_key: Optional[str]):
        self.base_url = base_url.rstrip("/")
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}

    def media_url(self, path: str, max_side: Optional[int] = None) -> str:
        """URL of a thumbnail of an indexed image reference (`GET /v1/media`)."""
        q = httpx.QueryParams(_drop_none({"path": path, "max_side": max_side}))
        return f"{self.base_url}/v1/media?{q}"

    @staticmethod
    def embeddings_body(input: Any, model, input_type, encoding_format, dimensions, frame):
        return _drop_none({"input": input, "model": model, "input_type": input_type,
                           "encoding_format": encoding_format, "dimensions": dimensions,
                           "frame": frame})

    @staticmethod
    def query(text, image, vector) -> Dict[str, Any]:
        return _drop_none({"text": text, "image": None if image is None else encode_image(image),
                           "vector": None if vector is None else list(vector)})


def _delay(resp: httpx.Response, attempt: int) -> float:
    try:
        return max(0.0, float(resp.headers.get("retry-after", "")))
    except ValueError:
        return min(0.5 * 2 ** attempt, 8.0)


def _result(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        raise MirageError.from_response(resp.status_code, body, resp.headers.get("x-request-id"))
    ctype = resp.headers.get("content-type", "")
    return resp.json() if "json" in ctype else resp.content


class Client(_Routes):
    """Blocking client.

    >>> c = Client("http://127.0.0.1:8080")
    >>> c.search("reports", text="pleural effusion", limit=5)["hits"]
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8080", api_key: Optional[str] = None,
                 timeout: float = 60.0, max_retries: int = 3,
                 transport: Optional[httpx.BaseTransport] = None):
        super().__init__(base_url, api_key)
        self.max_retries = max_retries
        self._http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def request(self, method: str, path: str, json: Any = None, params: Any = None) -> Any:
        """Sends one request; retries 429/503 after `Retry-After`; raises `MirageError`."""
        for attempt in range(self.max_retries + 1):
            resp = self._http.request(method, path, json=json, params=params)
            if resp.status_code in RETRYABLE and attempt < self.max_retries:
                time.sleep(_delay(resp, attempt))
                continue
            return _result(resp)
        raise AssertionError("unreachable")

    # Operations
    def info(self) -> Dict[str, Any]:
        return self.request("GET", "/info")

    def health(self) -> Dict[str, Any]:
        return self.request("GET", "/health")

    def ready(self) -> Dict[str, Any]:
        return self.request("GET", "/ready")

    def metrics(self) -> str:
        return self.request("GET", "/metrics").decode("utf-8")

    # Models
    def models(self) -> List[Dict[str, Any]]:
        return self.request("GET", "/v1/models")["data"]

    def load_model(self, path: str) -> Dict[str, Any]:
        return self.request("POST", "/v1/models", json={"path": path})

    def unload_model(self, model_id: str) -> Dict[str, Any]:
        return self.request("DELETE", f"/v1/models/{model_id}")

    # Inference
    def embeddings(self, input: Any, model: Optional[str] = None, input_type: Optional[str] = None,
                   encoding_format: Optional[str] = None, dimensions: Optional[int] = None,
                   frame: Optional[int] = None) -> Dict[str, Any]:
        """`POST /v1/embeddings` as sent (OpenAI shape)."""
        return self.request("POST", "/v1/embeddings", json=self.embeddings_body(
            input, model, input_type, encoding_format, dimensions, frame))

    def embed_texts(self, texts: Sequence[str], model: Optional[str] = None,
                    input_type: str = "document") -> List[List[float]]:
        """Unit vectors of `texts`, in order (`input_type="query"` for search queries)."""
        out = self.embeddings(list(texts), model=model, input_type=input_type)
        return [d["embedding"] for d in sorted(out["data"], key=lambda d: d["index"])]

    def embed_images(self, images: Iterable[ImageInput], model: Optional[str] = None) -> List[List[float]]:
        out = self.embeddings([{"image": encode_image(i)} for i in images], model=model)
        return [d["embedding"] for d in sorted(out["data"], key=lambda d: d["index"])]

    def classify(self, image: ImageInput, labels: Sequence[str], **options: Any) -> Dict[str, Any]:
        """Zero-shot classification; options: templates, negative_templates, multi_label,
        temperature, frame, model."""
        return self.request("POST", "/v1/classify",
                            json=_drop_none({"image": encode_image(image), "labels": list(labels), **options}))

    def audit(self, pairs: Sequence[Dict[str, Any]], **options: Any) -> Dict[str, Any]:
        body = [dict(p, image=encode_image(p["image"])) for p in pairs]
        return self.request("POST", "/v1/audit", json=_drop_none({"pairs": body, **options}))

    def rerank(self, query: str, documents: Sequence[str], **options: Any) -> Dict[str, Any]:
        return self.request("POST", "/v1/rerank",
                            json=_drop_none({"query": query, "documents": list(documents), **options}))

    # Retrieval
    def search(self, collection: str, text: Optional[str] = None, image: Optional[ImageInput] = None,
               vector: Optional[Sequence[float]] = None, **options: Any) -> Dict[str, Any]:
        """`POST /v1/search`; options: limit, offset, mode, fusion, target, filter,
        score_threshold, ef, exact, group_by, group_size, rerank, frame."""
        body = _drop_none({"collection": collection, "query": self.query(text, image, vector), **options})
        return self.request("POST", "/v1/search", json=body)

    def rag_context(self, collection: str, question: Optional[str] = None,
                    image: Optional[ImageInput] = None, **options: Any) -> Dict[str, Any]:
        """`POST /v1/rag/context`; options: k, max_chars, mode, fusion, filter, min_score,
        relative_score, max_score_gap, dedup_threshold, rerank, target, frame."""
        body = _drop_none({"collection": collection, "question": question,
                           "image": None if image is None else encode_image(image), **options})
        return self.request("POST", "/v1/rag/context", json=body)

    # Collections
    def collections(self) -> Dict[str, Any]:
        return self.request("GET", "/v1/collections")

    def create_collection(self, name: str, **settings: Any) -> Dict[str, Any]:
        return self.request("PUT", f"/v1/collections/{name}", json=_drop_none(settings))

    def get_collection(self, name: str) -> Dict[str, Any]:
        return self.request("GET", f"/v1/collections/{name}")

    def delete_collection(self, name: str) -> Dict[str, Any]:
        return self.request("DELETE", f"/v1/collections/{name}")

    def upsert(self, collection: str, items: Sequence[Dict[str, Any]], **options: Any) -> Dict[str, Any]:
        """Items: `id`, and `text`, `image` (path, bytes or base64), `image_uri`, `payload`,
        `vectors`; options: chunking, frame."""
        body = [dict(i, image=encode_image(i["image"])) if "image" in i else dict(i) for i in items]
        return self.request("POST", f"/v1/collections/{collection}/items",
                            json=_drop_none({"items": body, **options}))

    def delete_items(self, collection: str, ids: Optional[Sequence[str]] = None,
                     filter: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return self.request("DELETE", f"/v1/collections/{collection}/items",
                            json=_drop_none({"ids": None if ids is None else list(ids), "filter": filter}))

    # Snapshots (admin)
    def create_snapshot(self, collection: str) -> Dict[str, Any]:
        """Archives the collection while it serves; returns `name`, `items`, `size_bytes`, `sha256`."""
        return self.request("POST", f"/v1/collections/{collection}/snapshots")

    def snapshots(self) -> Dict[str, Any]:
        return self.request("GET", "/v1/snapshots")

    def download_snapshot(self, name: str, path: str) -> int:
        """Streams the archive to `path`; returns its size in bytes."""
        with self._http.stream("GET", f"/v1/snapshots/{name}") as resp:
            if resp.status_code >= 400:
                resp.read()
                _result(resp)
            size = 0
            with open(path, "wb") as out:
                for chunk in resp.iter_bytes():
                    out.write(chunk)
                    size += len(chunk)
        return size

    def delete_snapshot(self, name: str) -> Dict[str, Any]:
        return self.request("DELETE", f"/v1/snapshots/{name}")

    def restore_snapshot(self, name: str, as_name: Optional[str] = None) -> Dict[str, Any]:
        """Restores an archive as a new collection (default: its own name)."""
        return self.request("POST", f"/v1/snapshots/{name}/restore", json=_drop_none({"as": as_name}))


class AsyncClient(_Routes):
    """The same routes as `Client`, awaitable."""

    def __init__(self, base_url: str = "http://127.0.0.1:8080", api_key: Optional[str] = None,
                 timeout: float = 60.0, max_retries: int = 3,
                 transport: Optional[httpx.AsyncBaseTransport] = None):
        super().__init__(base_url, api_key)
        self.max_retries = max_retries
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers,
                                       timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def request(self, method: str, path: str, json: Any = None, params: Any = None) -> Any:
        for attempt in range(self.max_retries + 1):
            resp = await self._http.request(method, path, json=json, params=params)
            if resp.status_code in RETRYABLE and attempt < self.max_retries:
                await asyncio.sleep(_delay(resp, attempt))
                continue
            return _result(resp)
        raise AssertionError("unreachable")

    async def info(self) -> Dict[str, Any]:
        return await self.request("GET", "/info")

    async def models(self) -> List[Dict[str, Any]]:
        return (await self.request("GET", "/v1/models"))["data"]

    async def embeddings(self, input: Any, model: Optional[str] = None, input_type: Optional[str] = None,
                         encoding_format: Optional[str] = None, dimensions: Optional[int] = None,
                         frame: Optional[int] = None) -> Dict[str, Any]:
        return await self.request("POST", "/v1/embeddings", json=self.embeddings_body(
            input, model, input_type, encoding_format, dimensions, frame))

    async def embed_texts(self, texts: Sequence[str], model: Optional[str] = None,
                          input_type: str = "document") -> List[List[float]]:
        out = await self.embeddings(list(texts), model=model, input_type=input_type)
        return [d["embedding"] for d in sorted(out["data"], key=lambda d: d["index"])]

    async def classify(self, image: ImageInput, labels: Sequence[str], **options: Any) -> Dict[str, Any]:
        return await self.request("POST", "/v1/classify",
                                  json=_drop_none({"image": encode_image(image), "labels": list(labels), **options}))

    async def rerank(self, query: str, documents: Sequence[str], **options: Any) -> Dict[str, Any]:
        return await self.request("POST", "/v1/rerank",
                                  json=_drop_none({"query": query, "documents": list(documents), **options}))

    async def search(self, collection: str, text: Optional[str] = None, image: Optional[ImageInput] = None,
                     vector: Optional[Sequence[float]] = None, **options: Any) -> Dict[str, Any]:
        body = _drop_none({"collection": collection, "query": self.query(text, image, vector), **options})
        return await self.request("POST", "/v1/search", json=body)

    async def rag_context(self, collection: str, question: Optional[str] = None,
                          image: Optional[ImageInput] = None, **options: Any) -> Dict[str, Any]:
        body = _drop_none({"collection": collection, "question": question,
                           "image": None if image is None else encode_image(image), **options})
        return await self.request("POST", "/v1/rag/context", json=body)

    async def create_collection(self, name: str, **settings: Any) -> Dict[str, Any]:
        return await self.request("PUT", f"/v1/collections/{name}", json=_drop_none(settings))

    async def upsert(self, collection: str, items: Sequence[Dict[str, Any]], **options: Any) -> Dict[str, Any]:
        body = [dict(i, image=encode_image(i["image"])) if "image" in i else dict(i) for i in items]
        return await self.request("POST", f"/v1/collections/{collection}/items",
                                  json=_drop_none({"items": body, **options}))

    async def create_snapshot(self, collection: str) -> Dict[str, Any]:
        return await self.request("POST", f"/v1/collections/{collection}/snapshots")

    async def snapshots(self) -> Dict[str, Any]:
        return await self.request("GET", "/v1/snapshots")

    async def restore_snapshot(self, name: str, as_name: Optional[str] = None) -> Dict[str, Any]:
        return await self.request("POST", f"/v1/snapshots/{name}/restore",
                                  json=_drop_none({"as": as_name}))

    async def delete_collection(self, name: str) -> Dict[str, Any]:
        return await self.request("DELETE", f"/v1/collections/{name}")


def rag_messages(rag: Dict[str, Any], question: str, client: Optional[_Routes] = None,
                 system: Optional[str] = None, images: bool = True, max_side: int = 512) -> List[Dict[str, Any]]:
    """An OpenAI chat `messages` list for an MLLM from a `/v1/rag/context` answer: the numbered
    context and the question as text parts, and (with a `client` to build media URLs) the cited
    images as `image_url` parts. An abstained context says so instead of citing nothing."""
    parts: List[Dict[str, Any]] = []
    if rag.get("abstained"):
        parts.append({"type": "text", "text": "No indexed source is relevant enough to cite "
                      f"({rag.get('reason') or 'abstained'}); answer from general knowledge and say so."})
    else:
        parts.extend(dict(p) for p in rag.get("content_parts", []))
        if images and client is not None:
            for n, hit in enumerate(rag.get("citations", []), start=1):
                if hit.get("image"):
                    parts.append({"type": "text", "text": f"[{n}] image:"})
                    parts.append({"type": "image_url",
                                  "image_url": {"url": client.media_url(hit["image"], max_side)}})
    parts.append({"type": "text", "text": question})
    messages: List[Dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": parts})
    return messages
