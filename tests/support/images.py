"""Real image files generated in memory, in the formats field agents send."""

from __future__ import annotations

import functools
from io import BytesIO

from PIL import Image

__all__ = ["FORMATS", "make_image", "truncated"]

FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP"}


@functools.lru_cache(maxsize=64)
def make_image(width: int, height: int, extension: str = "jpg") -> bytes:
    """A real, decodable image of the given size; noisy so JPEG is not trivially small."""
    image = Image.effect_noise((width, height), 64).convert("RGB")
    buffer = BytesIO()
    image.save(buffer, format=FORMATS[extension])
    return buffer.getvalue()


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first part of an image file, as a dropped connection would leave it."""
    return data[: max(1, int(len(data) * keep))]
