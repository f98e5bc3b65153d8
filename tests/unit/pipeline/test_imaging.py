"""Measuring real images generated in memory."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from PIL import Image

from service.outcomes import FailureKind, ImageOutcome
from service.pipeline.imaging import (
    MeasureOptions,
    measure_batch,
    measure_image,
)
from tests.support.images import make_image, truncated

FULL = MeasureOptions(verify="full", max_pixels=50_000_000, max_jpeg_scans=100)
HEADER = MeasureOptions(verify="header", max_pixels=50_000_000, max_jpeg_scans=100)


@pytest.mark.parametrize("extension", ["jpg", "png", "gif", "webp"])
def test_measures_every_format(extension: str) -> None:
    result = measure_image(make_image(64, 48, extension), FULL)
    assert result == ImageOutcome.measured(64, 48)
    assert result.error is None
    assert result.perimeter == 2 * (64 + 48)


def test_full_verify_rejects_truncated_image_that_header_mode_accepts() -> None:
    data = truncated(make_image(320, 240, "jpg"))
    full = measure_image(data, FULL)
    assert full.error is not None
    assert full.error.startswith("corrupt or truncated image")
    assert measure_image(data, HEADER) == ImageOutcome.measured(320, 240)


def test_not_an_image() -> None:
    result = measure_image(b"<html>nope</html>", FULL)
    assert result == ImageOutcome.failed(
        "not an image (unrecognised format)", FailureKind.NOT_AN_IMAGE
    )


def test_pixel_limit_is_checked_before_decoding() -> None:
    result = measure_image(
        make_image(100, 50, "png"),
        MeasureOptions(verify="full", max_pixels=4_999, max_jpeg_scans=100),
    )
    assert result == ImageOutcome.failed("image too large: 100x50", FailureKind.PIXELS)


def test_batch_keeps_order_and_isolates_failures() -> None:
    results = measure_batch([make_image(10, 20, "png"), b"junk", make_image(3, 4, "gif")], FULL)
    assert results[0] == ImageOutcome.measured(10, 20)
    assert results[1].error is not None
    assert results[2] == ImageOutcome.measured(3, 4)


def _dds_with_unknown_pixel_format() -> bytes:
    """A real DDS file whose pixel-format flags Pillow does not know."""
    buffer = BytesIO()
    Image.new("RGB", (17, 9)).save(buffer, "DDS")
    data = bytearray(buffer.getvalue())
    struct.pack_into("<I", data, 80, 0x00A50000)  # DDS_PIXELFORMAT.dwFlags
    return bytes(data)


def test_unexpected_decoder_exception_fails_only_its_own_image() -> None:
    poison = _dds_with_unknown_pixel_format()
    with pytest.raises(NotImplementedError):
        Image.open(BytesIO(poison))  # what Pillow itself does with it
    results = measure_batch([make_image(10, 20, "png"), poison, make_image(3, 4, "gif")], FULL)
    assert results[0] == ImageOutcome.measured(10, 20)
    assert results[1].error is not None
    assert results[1].error.startswith("unsupported or corrupt image: NotImplementedError")
    assert results[2] == ImageOutcome.measured(3, 4)
