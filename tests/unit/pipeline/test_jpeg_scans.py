"""The JPEG scan limit: scans counted from the markers, and a scan bomb refused before decoding."""

from __future__ import annotations

import dataclasses
import random
from io import BytesIO

import pytest
from PIL import Image

from service.outcomes import FailureKind, ImageOutcome
from service.pipeline.imaging import MeasureOptions, measure_image
from service.pipeline.jpeg_scans import count_scans
from tests.support.images import last_scan, progressive_jpeg, repeat_last_scan

FULL = MeasureOptions(verify="full", max_pixels=50_000_000, max_jpeg_scans=100)
REFUSED = ImageOutcome.failed("too many JPEG scans (more than 100)", FailureKind.TOO_MANY_SCANS)


def baseline_jpeg(width: int, height: int) -> bytes:
    buffer = BytesIO()
    Image.effect_noise((width, height), 64).convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("restart_rows", [0, 1])
def test_progressive_jpeg_counts_its_ten_scans_and_is_measured(restart_rows: int) -> None:
    data = progressive_jpeg(128, 96, restart_rows=restart_rows)
    # The walk has to step over stuffed bytes (and restart markers) in the coded data.
    assert b"\xff\x00" in data
    assert (b"\xff\xd0" in data) == bool(restart_rows)
    assert count_scans(data, 100) == 10  # libjpeg's standard progression for YCbCr
    assert measure_image(data, FULL) == ImageOutcome.measured(128, 96)


def test_baseline_jpeg_counts_one_scan_and_is_measured() -> None:
    data = baseline_jpeg(128, 96)
    assert count_scans(data, 100) == 1
    assert measure_image(data, FULL) == ImageOutcome.measured(128, 96)


def test_scan_bomb_is_refused_with_the_scan_count_in_the_reason() -> None:
    bomb = repeat_last_scan(progressive_jpeg(128, 96), 200)
    assert count_scans(bomb, 100) == 101  # stops counting once over the limit
    assert count_scans(bomb, 1000) == 210
    assert measure_image(bomb, FULL) == REFUSED


def test_bomb_is_refused_before_decoding() -> None:
    # Cut short inside its 150th scan, the bomb would fail to decode as truncated;
    # the scan count is the reason given, so the file never reached the decoder.
    bomb = repeat_last_scan(progressive_jpeg(128, 96), 200)
    cut = bomb[: bomb.index(last_scan(bomb), len(bomb) // 2 + 5) + 5]
    full_decode = measure_image(cut, dataclasses.replace(FULL, max_jpeg_scans=10_000))
    assert full_decode.error is not None
    assert full_decode.error.startswith("corrupt or truncated image")
    assert measure_image(cut, FULL) == REFUSED


def test_the_limit_itself_is_allowed() -> None:
    data = progressive_jpeg(128, 96)
    assert measure_image(
        data, dataclasses.replace(FULL, max_jpeg_scans=10)
    ) == ImageOutcome.measured(128, 96)
    assert measure_image(data, dataclasses.replace(FULL, max_jpeg_scans=9)) == ImageOutcome.failed(
        "too many JPEG scans (more than 9)", FailureKind.TOO_MANY_SCANS
    )


def test_header_mode_decodes_nothing_so_it_does_not_count_scans() -> None:
    bomb = repeat_last_scan(progressive_jpeg(128, 96), 200)
    header = dataclasses.replace(FULL, verify="header")
    assert measure_image(bomb, header) == ImageOutcome.measured(128, 96)


def test_scans_of_a_jpeg_inside_a_segment_do_not_count() -> None:
    # A thumbnail in an APP or COM segment has scans of its own; segments are
    # skipped by their lengths, so only the image's own scans count.
    thumbnails = progressive_jpeg(16, 16) * 12
    assert thumbnails.count(b"\xff\xda") == 120
    comment = b"\xff\xfe" + (len(thumbnails) + 2).to_bytes(2, "big") + thumbnails
    data = progressive_jpeg(128, 96)
    with_comment = data[:2] + comment + data[2:]
    assert count_scans(with_comment, 100) == 10
    assert measure_image(with_comment, FULL) == ImageOutcome.measured(128, 96)


def test_only_the_first_image_of_concatenated_jpegs_counts() -> None:
    # As in an MPO, or a file with another JPEG appended after its EOI.
    data = progressive_jpeg(128, 96) + progressive_jpeg(16, 16) * 20
    assert count_scans(data, 100) == 10


def test_the_first_image_of_an_mpo_is_checked() -> None:
    frames = [Image.effect_noise((128, 96), 64).convert("RGB") for _ in range(2)]
    buffer = BytesIO()
    frames[0].save(buffer, "MPO", save_all=True, append_images=frames[1:], progressive=True)
    mpo = buffer.getvalue()
    first_end = mpo.index(b"\xff\xd9") + 2  # the first EOI: no FF D9 comes before it here
    bomb = repeat_last_scan(mpo[:first_end], 200) + mpo[first_end:]
    with Image.open(BytesIO(bomb)) as image:
        assert image.format == "MPO"
    assert measure_image(mpo, FULL) == ImageOutcome.measured(128, 96)
    assert measure_image(bomb, FULL) == REFUSED


def _garbage() -> list[bytes]:
    rng = random.Random(10)
    sos = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
    return [
        b"",
        b"\xff",
        b"\xff\xd8",
        b"\xff\xd8\xff",
        b"\xff\xd8\xff\xff\xff",
        b"\xff\xd8\xff\xda",
        b"\xff\xd8\xff\xda\x00",
        b"\xff\xd8\xff\xe0\x00\x00",  # a length below its own two bytes
        b"\xff\xd8\xff\xe0\x00\x01",
        b"\xff\xd8\xff\xe0\xff\xff\x00",  # a length past the end
        b"\xff\xd8" + sos + b"\xff\x00" * 5000,
        b"\xff\xd8" + sos + b"\xff" * 5000,
        b"\xff\xd8" + sos * 300,
        b"\xff\xd8" + bytes(rng.getrandbits(8) for _ in range(20_000)),
        b"\xff\xd8\xff" + rng.randbytes(20_000).replace(b"\xff", b"\xff\xda"),
    ]


@pytest.mark.parametrize("data", _garbage())
def test_garbage_never_raises(data: bytes) -> None:
    scans = count_scans(data, 100)
    assert 0 <= scans <= 101
    assert measure_image(data, FULL).error is not None


def test_every_truncation_of_a_progressive_jpeg_counts_without_raising() -> None:
    data = progressive_jpeg(64, 48)
    counts = [count_scans(data[:end], 100) for end in range(len(data) + 1)]
    assert counts[0] == 0
    assert counts[-1] == 10
    assert counts == sorted(counts)  # a longer prefix never has fewer scans


def test_not_a_jpeg_counts_no_scans() -> None:
    assert count_scans(b"\x89PNG\r\n\x1a\n" + b"\xff\xda" * 500, 100) == 0
