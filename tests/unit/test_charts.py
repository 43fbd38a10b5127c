"""The report's charts (matplotlib, issue 17): PNGs of the size the report shows, twice
as dense, each series drawn in its colour, the line where the values put it."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from PIL import Image

from backupd.render import charts

END = datetime(2026, 11, 30, 8, tzinfo=UTC)
SIZE = (charts.WIDTH * charts.SCALE, charts.HEIGHT * charts.SCALE)


def image(png: bytes) -> Image.Image:
    assert png.startswith(charts.PNG_SIGNATURE)
    return Image.open(io.BytesIO(png)).convert("RGB")


def rgb(color: str) -> tuple[int, int, int]:
    return (int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))


def pixels_of(img: Image.Image, color: str) -> list[tuple[int, int]]:
    want = rgb(color)
    width, height = img.size
    data = img.load()
    assert data is not None
    return [(x, y) for y in range(height) for x in range(width) if data[x, y] == want]


def test_an_area_chart_has_the_shown_size_twice_over_with_its_line_and_fill() -> None:
    img = image(charts.area_chart([1e9, 2e9, 4e9, 3e9, 8e9], END))
    assert img.size == SIZE
    assert pixels_of(img, charts.BLUE) and pixels_of(img, charts.BLUE_FILL)


def test_the_line_rises_with_the_values() -> None:
    img = image(charts.area_chart([0.0, 1e6, 2e6, 3e6, 10e6], END))
    line = pixels_of(img, charts.BLUE)
    width = img.size[0]
    left = min(y for x, y in line if x < width // 3)
    right = min(y for x, y in line if x > 2 * width // 3)
    assert right < left  # higher value: nearer the top


def test_a_line_chart_draws_each_series_in_its_own_colour() -> None:
    t = END.timestamp()
    series = [
        ("web1/maindb", [(t - 3 * 86400, 40.0), (t, 60.0)]),
        ("web2/shopdb", [(t - 2 * 86400, 120.0), (t - 86400, 90.0)]),
        ("web1/files", [(t - 86400, 12.0)]),
    ]
    img = image(charts.line_chart(series, x_range=(t - 7 * 86400, t)))
    assert img.size == SIZE
    for color in charts.PALETTE[:3]:
        assert pixels_of(img, color), color


def test_empty_and_flat_data_still_make_a_picture() -> None:
    for png in (
        charts.area_chart([], END),
        charts.area_chart([5.0], END),
        charts.area_chart([0.0, 0.0, 0.0], END),
        charts.line_chart([]),
    ):
        assert image(png).size == SIZE


def test_the_byte_axis_counts_in_one_binary_unit() -> None:
    assert charts._byte_unit(0) == (1, "B")
    assert charts._byte_unit(3 * 1024**3) == (1024**3, "GiB")
    assert charts._byte_unit(1023 * 1024) == (1024, "KiB")
