"""Schemathesis hooks for scripts/test-openapi.sh (loaded with SCHEMATHESIS_HOOKS).

The upload's `image` part is declared (OpenAPI `encoding.contentType`) as one of image/jpeg,
image/png, image/webp and image/gif, and the server checks the bytes are an image of that kind.
No JSON Schema can say "a decodable JPEG", so the generator is told what such files look like:
small real images of each format, made here with no dependency beyond the standard library, and
the one-pixel files Schemathesis ships. Everything else is generated from the document alone.
"""

import base64
import struct
import zlib

import schemathesis
from hypothesis import strategies as st
from schemathesis.core.file_samples import FILE_SAMPLES


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes((x * 7 + y * 3) % 256 for x in range(width * 3)) for y in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = st.sampled_from([FILE_SAMPLES["png"], _png(16, 9), _png(3, 40)])
schemathesis.openapi.media_type("image/png", PNG)
schemathesis.openapi.media_type("image/jpeg", st.just(FILE_SAMPLES["jpg"]))
schemathesis.openapi.media_type("image/gif", st.just(FILE_SAMPLES["gif"]))
schemathesis.openapi.media_type("image/webp", st.just(FILE_SAMPLES["webp"]))
