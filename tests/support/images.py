"""Real image files generated in memory, in the formats field agents send."""

from __future__ import annotations

import functools
from io import BytesIO

from PIL import Image

__all__ = [
    "FORMATS",
    "jpeg_scan_bomb",
    "last_scan",
    "make_image",
    "progressive_jpeg",
    "repeat_last_scan",
    "truncated",
]

FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP"}


@functools.lru_cache(maxsize=64)
def make_image(width: int, height: int, extension: str = "jpg") -> bytes:
    """A real, decodable image of the given size; noisy so JPEG is not trivially small."""
    image = Image.effect_noise((width, height), 64).convert("RGB")
    buffer = BytesIO()
    image.save(buffer, format=FORMATS[extension])
    return buffer.getvalue()


@functools.lru_cache(maxsize=8)
def progressive_jpeg(
    width: int, height: int, *, blank: bool = False, restart_rows: int = 0
) -> bytes:
    """A real progressive JPEG: libjpeg's standard script gives a colour image 10 scans.

    Noisy unless ``blank``, so its entropy-coded data holds stuffed 0xFF bytes;
    ``restart_rows`` adds restart markers every that many MCU rows.
    """
    if blank:
        image = Image.new("RGB", (width, height), (200, 200, 200))
    else:
        image = Image.effect_noise((width, height), 64).convert("RGB")
    buffer = BytesIO()
    image.save(buffer, format="JPEG", progressive=True, restart_marker_rows=restart_rows)
    return buffer.getvalue()


def last_scan(jpeg: bytes) -> bytes:
    """The last scan of a JPEG that ends in its EOI: the SOS segment and its coded data.

    Coded data never holds the bytes FF DA (0xFF is stuffed as FF 00 there), so the
    last FF DA is the last scan's marker.
    """
    assert jpeg.endswith(b"\xff\xd9"), "no EOI at the end"
    return jpeg[jpeg.rindex(b"\xff\xda") : -2]


def repeat_last_scan(jpeg: bytes, times: int) -> bytes:
    """The scan-bomb form: the JPEG with its last scan repeated ``times`` more times."""
    return jpeg[:-2] + last_scan(jpeg) * times + b"\xff\xd9"


@functools.lru_cache(maxsize=2)
def jpeg_scan_bomb(width: int, height: int, repeats: int) -> bytes:
    """A blank progressive JPEG whose last (AC refinement) scan repeats: small, slow to decode.

    Encoding a 7000x7000 one takes Pillow about 0.5 s, hence the cache.
    """
    return repeat_last_scan(progressive_jpeg(width, height, blank=True), repeats)


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first part of an image file, as a dropped connection would leave it."""
    return data[: max(1, int(len(data) * keep))]
