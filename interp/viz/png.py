"""Decode the PNGs Chromium writes (8-bit RGB/RGBA/gray, not interlaced) with zlib and numpy.

Enough to check a screenshot is not blank without an imaging library. Filters None, Sub and Up are
vectorised; Average and Paeth rows are undone pixel by pixel, so keep screenshots modest in size
(:meth:`interp.viz.chromium.Browser.screenshot` takes a ``scale``).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

__all__ = ["decode_png", "pixel_std"]

_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> channels


def decode_png(data: bytes) -> np.ndarray:
    """The image as a ``uint8`` array ``[height, width, channels]``."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    if header is None:
        raise ValueError("PNG without an IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in _CHANNELS or interlace:
        raise ValueError(
            f"unsupported PNG: bit depth {depth}, colour type {colour}, interlace {interlace}"
        )
    bpp = _CHANNELS[colour]
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(height, 1 + width * bpp)
    out = np.zeros((height, width * bpp), np.uint8)
    prev = np.zeros(width * bpp, np.uint8)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:]
        if kind == 0:
            row = line.copy()
        elif kind == 1:  # Sub: a running sum along the row, per channel, modulo 256
            row = np.cumsum(line.reshape(width, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:  # Up
            row = line + prev
        else:
            row = _sequential(kind, line, prev, bpp)
        out[y] = prev = row
    return out.reshape(height, width, bpp)


def _sequential(kind: int, line: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    cur, up = bytearray(line.tobytes()), prev.tobytes()
    for i in range(len(cur)):
        a = cur[i - bpp] if i >= bpp else 0
        b = up[i]
        if kind == 3:
            cur[i] = (cur[i] + ((a + b) >> 1)) & 0xFF
        elif kind == 4:
            c = up[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[i] = (cur[i] + pred) & 0xFF
        else:
            raise ValueError(f"bad PNG filter type {kind}")
    return np.frombuffer(bytes(cur), np.uint8)


def pixel_std(data: bytes) -> float:
    """Standard deviation of the colour channels over all pixels (0 for a blank image)."""
    img = decode_png(data)
    colour = img[..., :3] if img.shape[-1] >= 3 else img[..., :1]
    return float(colour.astype(np.float64).std())
