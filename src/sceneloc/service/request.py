"""Untrusted request fields of the localization server, checked before anything expensive happens.

Every function takes bytes or a string from a request and returns a decoded array, or raises
``RequestError`` with a one-line message and an HTTP status (4xx). Image sizes are read from the
PNG / JPEG header and checked against the pixel limit *before* decoding, so a 100 000 x 100 000
image costs its header, not gigabytes; truncated files are refused rather than decoded to a half-grey
image; nothing here touches the file system (a field is never a path).
"""

from __future__ import annotations

import math
import struct

import cv2
import numpy as np

from sceneloc.data.readers import JPEG_MAGIC, PNG_MAGIC, depth_to_metres, png_header
from sceneloc.geometry import intrinsics_matrix

#: JPEG start-of-frame markers (baseline, progressive, ...; not DHT C4, JPG C8, DAC CC) carry the size
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx) and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _png_header(data: bytes, what: str) -> tuple[int, int, int, int]:
    """Width, height, bit depth and colour type from a PNG's (complete) IHDR chunk."""
    header = png_header(data) if len(data) >= 33 else None
    if header is None:
        raise RequestError(400, f"{what}: truncated PNG header")
    return header


def _jpeg_size(data: bytes, what: str) -> tuple[int, int]:
    """Width and height from a JPEG's start-of-frame segment (markers walked, nothing decoded)."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise RequestError(400, f"{what}: corrupt JPEG (no marker at byte {i})")
        marker = data[i + 1]
        if marker == 0xFF:          # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):   # markers without a length
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in _SOF_MARKERS:
            if i + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    raise RequestError(400, f"{what}: truncated JPEG (no frame header)")


def image_size(data: bytes, what: str = "image") -> tuple[int, int]:
    """``(width, height)`` of PNG or JPEG ``data`` from its header; anything else is refused (415)."""
    if data.startswith(PNG_MAGIC):
        width, height, _, _ = _png_header(data, what)
        return width, height
    if data.startswith(JPEG_MAGIC):
        return _jpeg_size(data, what)
    raise RequestError(415, f"{what}: not a PNG or JPEG file")


def check_complete(data: bytes, what: str) -> None:
    """Refuse a file cut short: a PNG ends with its IEND chunk, a JPEG with the end-of-image marker
    (decoders fill a truncated JPEG with grey and say nothing)."""
    if data.startswith(PNG_MAGIC):
        ok = data[-12:-4] == b"\x00\x00\x00\x00IEND"
    else:
        ok = data.rstrip(b"\x00")[-2:] == b"\xff\xd9"
    if not ok:
        raise RequestError(400, f"{what}: truncated file (no end marker)")


def _checked_size(data: bytes, what: str, max_pixels: int) -> tuple[int, int]:
    if not data:
        raise RequestError(400, f"{what}: empty file")
    width, height = image_size(data, what)
    if width == 0 or height == 0:
        raise RequestError(400, f"{what}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise RequestError(413, f"{what}: {width}x{height} pixels, more than the limit of {max_pixels}")
    check_complete(data, what)
    return width, height


def _decode(data: bytes, flags: int, what: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise RequestError(400, f"{what}: not a decodable image")
    return image


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """RGB ``(H, W, 3)`` uint8 from PNG or JPEG bytes, size checked before decoding."""
    width, height = _checked_size(data, "image", max_pixels)
    image = _decode(data, cv2.IMREAD_COLOR, "image")
    if image.shape[:2] != (height, width):
        raise RequestError(400, f"image: header says {width}x{height}, decoded {image.shape[1]}x{image.shape[0]}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_depth(data: bytes, image_hw: tuple[int, int], max_pixels: int) -> np.ndarray:
    """Depth ``(H, W)`` metres (0 = none) from a single-channel 16-bit PNG in millimetres whose size
    is the image's ``image_hw``; bit depth, channels and size are checked in the header."""
    if not data.startswith(PNG_MAGIC):
        raise RequestError(415, "depth: not a PNG file (expected a 16-bit PNG in millimetres)")
    width, height = _checked_size(data, "depth", max_pixels)
    _, _, bit_depth, colour_type = _png_header(data, "depth")
    if bit_depth != 16 or colour_type != 0:
        raise RequestError(400, f"depth: must be a single-channel 16-bit PNG in millimetres "
                                f"(got bit depth {bit_depth}, colour type {colour_type})")
    if (height, width) != tuple(image_hw):
        raise RequestError(400, f"depth: {width}x{height} but the image is {image_hw[1]}x{image_hw[0]}")
    return depth_to_metres(_decode(data, cv2.IMREAD_ANYDEPTH, "depth"))


def parse_intrinsics_field(text: str) -> np.ndarray:
    """``"fx,fy,cx,cy"`` (finite numbers, positive focal lengths) -> ``K (3, 3)``. Unlike the CLI's
    ``data.readers.parse_intrinsics`` a field is never read as a file name."""
    parts = text.split(",")
    try:
        values = [float(v) for v in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[0] <= 0 or values[1] <= 0:
        raise RequestError(400, "intrinsics: expected 'fx,fy,cx,cy' with positive finite focal lengths")
    return intrinsics_matrix(*values)
