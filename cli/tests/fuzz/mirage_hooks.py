"""Schemathesis hooks for the MIRAGE API fuzz run (loaded through SCHEMATHESIS_HOOKS).

The schema marks image fields with the custom string format `image-data` (a data URI or bare
base64 of PNG, JPEG or DICOM bytes): no JSON Schema keyword can say "these bytes decode as an
image", so schema-valid values come from here. They are real PNG files of random size, bit depth
and colour type, as a data URI or as bare base64, encoded with the standard library only.

Two failures are not the server's, and `filter_failure` drops exactly those:
- the coverage phase builds the JSON `request` part of multipart bodies without custom format
  generators, so its "valid" images there are strings like "AAA": a 422 `invalid-image` answer to
  such a case;
- `chunking.overlap` must be below `chunking.tokens` (or the default window), a rule between two
  fields that JSON Schema cannot state and the schema's description does: a 422 naming that rule,
  for a request whose overlap really is not below its window.
Every other failure stands.
"""

import json

import base64
import struct
import zlib

import schemathesis
from hypothesis import strategies as st


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png(width: int, height: int, channels: int, seed: int) -> bytes:
    """An 8-bit PNG (grey, grey+alpha, RGB or RGBA) with deterministic pseudo-random pixels."""
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = []
    state = seed or 1
    for _ in range(height):
        row = bytearray([0])  # filter type None
        for _ in range(width * channels):
            state = (state * 1103515245 + 12345) & 0x7FFFFFFF
            row.append(state >> 23)
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + _chunk(b"IEND", b"")
    )


@st.composite
def image_data(draw) -> str:
    data = png(
        draw(st.integers(1, 48)),
        draw(st.integers(1, 48)),
        draw(st.sampled_from([1, 2, 3, 4])),
        draw(st.integers(0, 2**31 - 1)),
    )
    b64 = base64.b64encode(data).decode()
    return draw(st.sampled_from([f"data:image/png;base64,{b64}", b64]))


schemathesis.openapi.format("image-data", image_data())


def _chunking(body):
    """The `chunking` object of an upsert body (JSON, or the multipart `request` part)."""
    if isinstance(body, dict) and isinstance(body.get("request"), (str, bytes)):
        try:
            body = json.loads(body["request"])
        except ValueError:
            return None
    elif isinstance(body, dict) and isinstance(body.get("request"), dict):
        body = body["request"]
    chunking = body.get("chunking") if isinstance(body, dict) else None
    return chunking if isinstance(chunking, dict) else None


def _overlap_not_below_window(case, response) -> bool:
    chunking = _chunking(case.body)
    overlap = chunking and chunking.get("overlap")
    if not isinstance(overlap, int) or response.status_code != 422:
        return False
    tokens = chunking.get("tokens")
    # Without `tokens` the window is the model's limit, which the detail names.
    return (
        (not isinstance(tokens, int) or overlap >= tokens)
        and '"urn:mirage:problem:invalid-request"' in response.text
        and "chunk overlap must be smaller than the window" in response.text
    )


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    made_up_image = (
        case.meta is not None
        and case.meta.phase.name == "coverage"
        and case.meta.generation.mode.is_positive
        and response.status_code == 422
        and response.headers.get("content-type", [""])[0].startswith("application/problem+json")
        and '"urn:mirage:problem:invalid-image"' in response.text
    )
    return not made_up_image and not _overlap_not_below_window(case, response)
