"""The report's PNG charts: valid files (signature, header, CRCs, pixel data) drawn right."""

from __future__ import annotations

import struct
import zlib

import pytest

from backupd.render import charts


def decode(png: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes), checking every chunk's CRC on the way."""
    assert png[:8] == charts.PNG_SIGNATURE
    pos, chunks = 8, []
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF, kind
        chunks.append((kind, data))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, color_type, _c, _f, _i = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, color_type) == (8, 2)
    raw = zlib.decompress(b"".join(d for k, d in chunks if k == b"IDAT"))
    stride = 1 + 3 * width
    assert len(raw) == stride * height
    rows = [raw[y * stride : (y + 1) * stride] for y in range(height)]
    assert all(r[0] == 0 for r in rows)  # filter type 0
    return width, height, [r[1:] for r in rows]


def colors(rows: list[bytes]) -> set[tuple[int, int, int]]:
    return {(r[i], r[i + 1], r[i + 2]) for r in rows for i in range(0, len(r), 3)}


def test_an_area_chart_is_a_valid_png_of_the_asked_size_with_its_line_and_fill() -> None:
    png = charts.area_chart([1.0, 2.0, 4.0, 3.0, 8.0], width=200, height=80)
    width, height, rows = decode(png)
    assert (width, height) == (200, 80)
    found = colors(rows)
    assert {charts.BLUE, charts.BLUE_FILL, charts.WHITE, charts.AXIS} <= found


def test_the_line_rises_with_the_values() -> None:
    _w, _h, rows = decode(charts.area_chart([0.0, 10.0], width=100, height=60))

    def top_of_line(x: int) -> int:
        return next(y for y, r in enumerate(rows) if r[3 * x : 3 * x + 3] == bytes(charts.BLUE))

    assert top_of_line(90) < top_of_line(10)  # higher value: nearer the top


def test_a_line_chart_draws_each_series_in_its_own_colour() -> None:
    series = [[(0.0, 10.0), (5.0, 20.0)], [(1.0, 5.0), (4.0, 8.0)], [(2.0, 1.0)]]
    _w, _h, rows = decode(charts.line_chart(series, width=160, height=90))
    assert set(charts.PALETTE[:3]) <= colors(rows)


def test_empty_and_flat_data_still_make_a_picture() -> None:
    decode(charts.area_chart([]))
    decode(charts.area_chart([5.0]))
    decode(charts.area_chart([0.0, 0.0, 0.0]))
    decode(charts.line_chart([]))


def test_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="out of range"):
        charts.Canvas(0, 10)
    with pytest.raises(ValueError, match="does not match"):
        charts.encode_png(2, 2, b"\x00" * 11)


def test_drawing_outside_the_canvas_is_clipped() -> None:
    canvas = charts.Canvas(10, 10)
    canvas.line(-5, -5, 20, 20, charts.BLUE, width=3)
    canvas.rect(-3, 8, 30, 30, charts.AXIS)
    canvas.dot(9, 0, 4, charts.BLUE)
    assert canvas.get(5, 5) == charts.BLUE and canvas.get(0, 9) == charts.AXIS
    assert decode(canvas.png())[:2] == (10, 10)


def test_hex_colour() -> None:
    assert charts.hex_color((176, 0, 32)) == "#b00020"
