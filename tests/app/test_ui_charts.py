"""The dashboard's SVG charts: what people typed is escaped, values are drawn to scale, empty data says so."""

from __future__ import annotations

import re

from app.ui.charts import bar_chart, curve_chart


def test_bar_lengths_follow_the_values_and_names_are_escaped():
    svg = str(bar_chart({"<script>x</script>": 10, "b": 5}, "Totals & more"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "Totals &amp; more" in svg
    widths = [float(w) for w in re.findall(r'<rect [^>]*width="([0-9.]+)"', svg)]
    assert widths[0] == 2 * widths[1] > 0


def test_empty_charts_say_so():
    assert "nothing measured yet" in str(bar_chart({}, "Minutes"))
    assert "no measured model version yet" in str(curve_chart([], [], "Curve", "labels", "Dice"))


def test_the_curve_chart_draws_each_point_with_its_interval_and_the_fitted_line():
    svg = str(curve_chart([(4, 0.2, 0.1, 0.3), (8, 0.4, None, None)], [(4, 0.2), (8, 0.4), (12, 0.5)], "Curve",
                          "labels", "Dice"))
    assert svg.count("<circle") == 2 and svg.count("<path") == 1
    assert svg.count("<line") == 2 + 1  # the axes, and the one point with an interval
    assert "4 labels: 0.200" in svg and "8 labels: 0.400" in svg
