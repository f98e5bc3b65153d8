"""Decode limits: pixel budget from the header, Pillow's bomb check as an error, clear reasons."""

from __future__ import annotations

import pytest

from service.outcomes import FailureKind, ImageOutcome
from service.pipeline.imaging import MeasureOptions, measure_image
from tests.support.fault_host import png_bomb
from tests.support.images import make_image, truncated

FULL = MeasureOptions(verify="full", max_pixels=50_000_000, max_jpeg_scans=100)


@pytest.mark.parametrize("verify", ["full", "header"])
def test_30000_by_30000_png_bomb_is_refused_before_decoding(verify: str) -> None:
    bomb = png_bomb(30_000, 30_000)
    assert len(bomb) < 200
    result = measure_image(
        bomb, MeasureOptions(verify=verify, max_pixels=50_000_000, max_jpeg_scans=100)
    )
    assert result == ImageOutcome.failed("image too large: 30000x30000", FailureKind.PIXELS)


def test_image_over_our_pixel_limit_but_under_pillows() -> None:
    result = measure_image(png_bomb(8000, 7000), FULL)
    assert result == ImageOutcome.failed("image too large: 8000x7000", FailureKind.PIXELS)


def test_pillows_own_bomb_error_gets_the_same_message() -> None:
    # max_pixels above Pillow's limit (in this process): its error is reported as WxH too.
    result = measure_image(
        png_bomb(30_000, 30_000),
        MeasureOptions(verify="full", max_pixels=10**12, max_jpeg_scans=100),
    )
    assert result == ImageOutcome.failed("image too large: 30000x30000", FailureKind.PIXELS)


def test_image_within_limits_is_measured() -> None:
    assert measure_image(make_image(40, 30, "png"), FULL) == ImageOutcome.measured(40, 30)


def test_truncated_jpeg_and_html_fail_with_clear_reasons() -> None:
    cut = measure_image(truncated(make_image(300, 200, "jpg")), FULL)
    assert cut.error is not None
    assert cut.error.startswith("corrupt or truncated image")
    html = measure_image(b"<html><body>not an image</body></html>", FULL)
    assert html == ImageOutcome.failed(
        "not an image (unrecognised format)", FailureKind.NOT_AN_IMAGE
    )
