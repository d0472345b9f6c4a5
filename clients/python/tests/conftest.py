"""The client's tests run against a live `mirage serve` whose URL is MIRAGE_URL (the Rust test
`cli/tests/it/http/python_client.rs` starts one and runs pytest); without it they skip."""

import os
import struct
import zlib

import pytest

from mirage_client import AsyncClient, Client


def png(seed: int, side: int = 24) -> bytes:
    """A small RGB PNG, different per seed (no imaging library needed)."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(side)
                        for v in ((x * 7 + y * 3 + seed * 40) % 256, (x * seed) % 256, (y * 11) % 256))
        for y in range(side)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def url() -> str:
    u = os.environ.get("MIRAGE_URL")
    if not u:
        pytest.skip("MIRAGE_URL is not set: start `mirage serve` (the Rust test does)")
    return u


@pytest.fixture(scope="session")
def client(url):
    with Client(url) as c:
        yield c


@pytest.fixture()
def async_client(url):
    return AsyncClient(url)


REPORTS = [
    ("r1", "chest x-ray with pneumonia in the right lower lobe", {"modality": "CR", "year": 2020}),
    ("r2", "normal chest radiograph without effusion", {"modality": "CR", "year": 2021}),
    ("r3", "pleural effusion on the left with atelectasis", {"modality": "CT", "year": 2022}),
    ("r4", "axial brain mri with a small lesion", {"modality": "MR", "year": 2023}),
]


@pytest.fixture(scope="session")
def collection(client) -> str:
    name = "pyclient"
    client.create_collection(name)
    items = [{"id": i, "text": t, "payload": p} for i, t, p in REPORTS]
    media = os.environ.get("MIRAGE_MEDIA_FILE", "scan.png")
    items.append({"id": "img1", "image": png(1), "image_uri": media, "payload": {"modality": "CR"}})
    items.append({"id": "img2", "image": png(2), "image_uri": media, "payload": {"modality": "MR"}})
    client.upsert(name, items)
    return name
