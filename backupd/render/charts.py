"""Small charts for the weekly report, rasterised to PNG in pure Python.

A report carries two small charts (store growth, restore time per source). A plotting
library would be the largest dependency of the project for a few hundred pixels, so this
draws on an RGB canvas (filled rectangles, thick lines, dots) and encodes the PNG itself
(zlib + struct). Charts carry no text: axis values go into the report's caption, which
every mail client renders, while text inside images would need a font.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

Color = tuple[int, int, int]

WHITE: Color = (255, 255, 255)
GRID: Color = (228, 231, 235)
AXIS: Color = (120, 126, 134)
BLUE: Color = (37, 99, 235)
BLUE_FILL: Color = (191, 212, 250)
# One colour per series, distinguishable and named in the report's legend.
PALETTE: tuple[Color, ...] = (
    (37, 99, 235),
    (217, 119, 6),
    (5, 150, 105),
    (190, 24, 93),
    (124, 58, 237),
    (8, 145, 178),
    (101, 163, 13),
    (87, 83, 78),
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SIDE = 2000  # a chart is small; anything bigger is a bug, not a request


class Canvas:
    """An RGB raster, origin top left."""

    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
            raise ValueError(f"canvas size {width}x{height} out of range")
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def set(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self.pixels[i : i + 3] = bytes(color)

    def get(self, x: int, y: int) -> Color:
        i = 3 * (y * self.width + x)
        return (self.pixels[i], self.pixels[i + 1], self.pixels[i + 2])

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        """Fill the rectangle with corners (x0, y0) and (x1, y1), both included."""
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        x0, x1 = max(0, x0), min(self.width - 1, x1)
        y0, y1 = max(0, y0), min(self.height - 1, y1)
        if x0 > x1 or y0 > y1:  # wholly outside the canvas
            return
        row = bytes(color) * (x1 - x0 + 1)
        for y in range(y0, y1 + 1):
            i = 3 * (y * self.width + x0)
            self.pixels[i : i + len(row)] = row

    def dot(self, x: int, y: int, radius: int, color: Color) -> None:
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                if dx * dx + dy * dy <= radius * radius:
                    self.set(x + dx, y + dy, color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: Color, width: int = 1) -> None:
        """Bresenham's line, each point stamped as a small square for thickness."""
        half = width // 2
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.rect(x0 - half, y0 - half, x0 - half + width - 1, y0 - half + width - 1, color)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def png(self) -> bytes:
        return encode_png(self.width, self.height, bytes(self.pixels))


def encode_png(width: int, height: int, rgb: bytes) -> bytes:
    """A truecolour 8-bit PNG: filter type 0 on every scanline, one IDAT chunk."""
    stride = 3 * width
    if len(rgb) != stride * height:
        raise ValueError("pixel data does not match the size")
    raw = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + (_chunk(b"IEND", b""))
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


@dataclass(frozen=True)
class Frame:
    """The plot area inside the canvas and the data ranges it maps."""

    left: int
    top: int
    right: int
    bottom: int
    x_min: float
    x_max: float
    y_max: float

    def x(self, value: float) -> int:
        span = (self.x_max - self.x_min) or 1.0
        return round(self.left + (value - self.x_min) / span * (self.right - self.left))

    def y(self, value: float) -> int:
        top = self.y_max or 1.0
        return round(self.bottom - max(0.0, value) / top * (self.bottom - self.top))


def _frame(canvas: Canvas, x_min: float, x_max: float, y_max: float) -> Frame:
    """Axes and four light grid lines; y always starts at 0 so growth is not exaggerated."""
    frame = Frame(6, 6, canvas.width - 7, canvas.height - 7, x_min, x_max, y_max * 1.08)
    for i in range(1, 5):
        y = frame.bottom - i * (frame.bottom - frame.top) // 4
        canvas.line(frame.left, y, frame.right, y, GRID)
    canvas.line(frame.left, frame.bottom, frame.right, frame.bottom, AXIS)
    canvas.line(frame.left, frame.top, frame.left, frame.bottom, AXIS)
    return frame


def area_chart(
    values: Sequence[float], width: int = 480, height: int = 140, color: Color = BLUE
) -> bytes:
    """Evenly spaced values as a filled area under a line (e.g. bytes stored per day)."""
    canvas = Canvas(width, height)
    frame = _frame(canvas, 0, max(1, len(values) - 1), max(values, default=0.0))
    points = [(frame.x(i), frame.y(v)) for i, v in enumerate(values)]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        for x in range(x0, x1 + 1):  # fill each column below the interpolated line
            y = y0 + (y1 - y0) * (x - x0) // max(1, x1 - x0)
            canvas.rect(x, y, x, frame.bottom - 1, BLUE_FILL)
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        canvas.line(x0, y0, x1, y1, color, width=2)
    if len(points) == 1:
        canvas.dot(*points[0], 3, color)
    return canvas.png()


def line_chart(
    series: Sequence[Sequence[tuple[float, float]]],
    width: int = 480,
    height: int = 140,
    x_range: tuple[float, float] | None = None,
) -> bytes:
    """Several series of (x, y) points, each in its PALETTE colour, with a dot per point."""
    xs = [x for s in series for x, _ in s]
    ys = [y for s in series for _, y in s]
    x_min, x_max = x_range or (min(xs, default=0.0), max(xs, default=1.0))
    canvas = Canvas(width, height)
    frame = _frame(canvas, x_min, x_max, max(ys, default=0.0))
    for n, points in enumerate(series):
        color = PALETTE[n % len(PALETTE)]
        placed = [(frame.x(x), frame.y(y)) for x, y in sorted(points)]
        for (x0, y0), (x1, y1) in itertools.pairwise(placed):
            canvas.line(x0, y0, x1, y1, color, width=2)
        for x, y in placed:
            canvas.dot(x, y, 3, color)
    return canvas.png()


def hex_color(color: Color) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)
