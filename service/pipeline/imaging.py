"""Image measurement: plain synchronous Pillow code that runs inside pool workers.

Nothing here imports asyncio or aiohttp; the functions are pickled by reference
and called in worker processes, a batch of images per call to amortise IPC.
"""

from __future__ import annotations

import os
import signal
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO

from PIL import Image, UnidentifiedImageError

from service.outcomes import FailureKind, ImageOutcome
from service.pipeline.jpeg_scans import count_scans

__all__ = [
    "MeasureOptions",
    "init_worker",
    "measure_batch",
    "measure_image",
    "ping",
]

# Pillow's names for files libjpeg decodes (an MPO is JPEGs in a row; load() decodes the first).
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})


@dataclass(frozen=True, slots=True, kw_only=True)
class MeasureOptions:
    """How images are measured; sent to the workers with every batch."""

    verify: str
    max_pixels: int
    max_jpeg_scans: int


def init_worker(niceness: int = 0) -> None:
    """Pool initializer: runs once in each worker process."""
    if niceness:
        # Decoding is batch work; the event loop serving requests comes first
        # whenever the two compete for a CPU.
        os.nice(niceness)
    # Ctrl-C reaches the whole process group; the parent owns shutdown, so
    # workers ignore SIGINT instead of printing KeyboardInterrupt tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # measure_image enforces max_pixels itself right after reading the header, so
    # it can say "image too large: WxH"; Pillow's own check in open() would fire
    # first with a vaguer message. Its warning stays an error for any other path.
    Image.MAX_IMAGE_PIXELS = None
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def ping() -> bool:
    """Cheap call that proves a worker is alive and answering."""
    return True


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """The dimensions a header declares, read with Pillow's bomb check off (nothing is decoded)."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(BytesIO(data)) as image:
            return image.size
    except Exception:
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _too_large(data: bytes) -> ImageOutcome:
    size = _declared_size(data)
    reason = "image too large" if size is None else f"image too large: {size[0]}x{size[1]}"
    return ImageOutcome.failed(reason, FailureKind.PIXELS)


def measure_image(data: bytes, options: MeasureOptions) -> ImageOutcome:
    """Return the image's original dimensions, or why it cannot be measured."""
    try:
        # Pillow's bomb check fires inside open() and load(); as an error, whatever the
        # process's warning filters, it stops the decode (the message is rebuilt below).
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _measure(data, options)
    except UnidentifiedImageError:
        return ImageOutcome.failed("not an image (unrecognised format)", FailureKind.NOT_AN_IMAGE)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return _too_large(data)
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        return ImageOutcome.failed(f"corrupt or truncated image: {exc}", FailureKind.DECODE)
    except MemoryError:
        return _too_large(data)
    except Exception as exc:
        # Pillow's plugins raise more than the types above on hostile files (a
        # DDS with unknown pixel flags, a broken TIFF); one such file must
        # cost its own image only, never the batch it shares a worker call with.
        return ImageOutcome.failed(
            f"unsupported or corrupt image: {type(exc).__name__}: {exc}", FailureKind.DECODE
        )


def _measure(data: bytes, options: MeasureOptions) -> ImageOutcome:
    with Image.open(BytesIO(data)) as image:
        width, height = image.size
        if width <= 0 or height <= 0:
            return ImageOutcome.failed(
                f"invalid image dimensions: {width}x{height}", FailureKind.PIXELS
            )
        if width * height > options.max_pixels:
            return ImageOutcome.failed(f"image too large: {width}x{height}", FailureKind.PIXELS)
        if options.verify == "full":
            # libjpeg decodes a progressive JPEG once per scan; a file repeating
            # one scan thousands of times would hold this worker for minutes.
            if image.format in _JPEG_FORMATS:
                scans = count_scans(data, options.max_jpeg_scans)
                if scans > options.max_jpeg_scans:
                    return ImageOutcome.failed(
                        f"too many JPEG scans (more than {options.max_jpeg_scans})",
                        FailureKind.TOO_MANY_SCANS,
                    )
            # load() decodes every pixel of the first frame, so corrupt or
            # truncated files fail here rather than passing on their header.
            image.load()
        return ImageOutcome.measured(width, height)


def _ignore(index: int) -> None:
    pass


def measure_batch(
    images: list[bytes], options: MeasureOptions, starting: Callable[[int], None] = _ignore
) -> list[ImageOutcome]:
    """Measure several images in one pool call; one result per input, same order.

    ``starting(i)`` runs just before image i: the pool's decode deadline counts from it.
    """
    results: list[ImageOutcome] = []
    for index, data in enumerate(images):
        starting(index)
        results.append(measure_image(data, options))
    return results
