"""The lab's static pictures (cntk_widgets.static_plots): the colour map is plotly's viridis, the
heatmap grid and line chart are HTML with one colour bar and a legend, and axis ticks are round numbers."""

from __future__ import annotations

import numpy as np
import pytest

from cntk_widgets.static_plots import colour_map, heatmap_grid_html, line_chart_svg, nice_ticks


def test_colour_map_endpoints_are_plotly_viridis():
    rgb = colour_map(np.array([-1.0, 0.0, 1.0, 2.0]))
    assert rgb[1].tolist() == [0x44, 0x01, 0x54] and rgb[2].tolist() == [0xFD, 0xE7, 0x25]
    assert rgb[0].tolist() == rgb[1].tolist() and rgb[3].tolist() == rgb[2].tolist()  # clipped


def test_pictures_are_html_with_one_colour_bar_and_a_legend():
    k = np.eye(4)
    html = heatmap_grid_html([("A", k), ("B", k)], size=120)
    assert html.count("<img") == 3 and html.count("cntk-colorbar") == 1 and "A</figcaption>" in html
    svg = line_chart_svg([("one", np.arange(1, 5), np.array([10, 1, 0.1, 0.01]))], log_y=True, x_title="n")
    assert svg.count("<polyline") == 1 and "cntk-legend" in svg and "</span>one</span>" in svg


def test_nice_ticks():
    assert nice_ticks(1, 40) == [10, 20, 30, 40]
    assert nice_ticks(0, 1) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
