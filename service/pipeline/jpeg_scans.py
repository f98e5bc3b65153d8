"""Counting a JPEG's scans from its markers, without decoding: the guard against scan bombs.

libjpeg decodes a progressive JPEG once per scan over every block the scan
covers, so a small file that repeats one scan thousands of times costs minutes
of CPU (libjpeg-turbo's ``djpeg -maxscans`` exists for this attack). Ordinary
files have one scan (baseline) to about ten (progressive).
"""

from __future__ import annotations

import re

__all__ = ["count_scans"]

_SOI = b"\xff\xd8"
_SOI_CODE = 0xD8
_EOI_CODE = 0xD9
_SOS_CODE = 0xDA

# The next marker that starts a segment or ends the image. In entropy-coded data
# 0xFF is followed by 0x00 (byte stuffing) or by a restart marker RST0-RST7, and
# any marker may follow 0xFF fill bytes; TEM (0x01) has no length either. None of
# these match, so one search skips a whole scan's data in C, however many 0xFF
# bytes it holds (bytes.find would stop at each one).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\x01\xd0-\xd7\xff]")


def count_scans(data: bytes, stop_after: int) -> int:
    """Start-of-scan markers in the first image of a JPEG, counted up to ``stop_after + 1``.

    Segments are skipped by their declared lengths, so a thumbnail inside an APP
    segment does not count. Never raises: data that is not a JPEG counts 0, and a
    truncated or malformed structure ends the count where it breaks (the decoder
    then judges the file).
    """
    if not data.startswith(_SOI):
        return 0
    scans = 0
    end = len(data)
    position = len(_SOI)
    search = _NEXT_MARKER.search
    while (marker := search(data, position)) is not None:
        code = data[marker.start() + 1]
        position = marker.end()
        # A second SOI is an error for libjpeg; the EOI ends the first image
        # (an MPO's other images follow it, and Pillow decodes only the first).
        if code in (_EOI_CODE, _SOI_CODE):
            break
        if code == _SOS_CODE:
            scans += 1
            if scans > stop_after:
                break
        if position + 2 > end:
            break
        length = data[position] << 8 | data[position + 1]
        if length < 2:
            break
        # The length counts its own two bytes; an SOS segment is its header, and
        # the search above then skips the entropy-coded data after it.
        position += length
    return scans
