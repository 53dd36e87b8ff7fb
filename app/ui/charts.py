"""Charts as inline SVG, drawn on the server: no script, no CDN, readable without JavaScript. Every text is escaped."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, BAR_HEIGHT, LABEL_WIDTH = 520, 18, 150
COLOURS = ("#3b7dd8", "#d8843b", "#3bb273", "#c23b52", "#7f5bd5", "#8c8c8c")


def bar_chart(values: dict[str, float], title: str, unit: str = "", digits: int = 0) -> Markup:
    """Horizontal bars, one per key, in the given order."""
    top = max([v for v in values.values() if v is not None] + [1e-9])
    height = 28 + BAR_HEIGHT * 1.4 * max(len(values), 1) + (0 if values else 10)
    parts = [f'<svg class="chart" role="img" width="{WIDTH}" height="{height:.0f}" viewBox="0 0 {WIDTH} {height:.0f}">',
             f'<title>{escape(title)}</title><text x="0" y="16" class="chart-title">{escape(title)}</text>']
    span = WIDTH - LABEL_WIDTH - 80
    for i, (name, value) in enumerate(values.items()):
        y = 28 + i * BAR_HEIGHT * 1.4
        length = 0 if value is None else span * value / top
        shown = "–" if value is None else f"{value:.{digits}f}{unit}"
        parts.append(
            f'<text x="{LABEL_WIDTH - 6}" y="{y + 13:.0f}" text-anchor="end">{escape(name)}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y:.0f}" width="{length:.1f}" height="{BAR_HEIGHT}" fill="{COLOURS[i % len(COLOURS)]}"/>'
            f'<text x="{LABEL_WIDTH + length + 4:.1f}" y="{y + 13:.0f}">{escape(shown)}</text>'
        )
    if not values:
        parts.append('<text x="0" y="40">nothing measured yet</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def curve_chart(points: Sequence[tuple[float, float, float | None, float | None]], curve: Sequence[tuple[float, float]],
                title: str, x_label: str, y_label: str) -> Markup:
    """Points (x, y, interval low, interval high) with a fitted line through ``curve``; y from 0 to 1."""
    width, height, left, bottom, top_margin = WIDTH, 270, 50, 40, 44
    xs = [p[0] for p in points] + [c[0] for c in curve] or [1.0]
    x_max = max(xs) * 1.05 or 1.0

    def sx(x: float) -> float:
        return left + (width - left - 10) * x / x_max

    def sy(y: float) -> float:
        return top_margin + (height - bottom - top_margin) * (1 - max(0.0, min(1.0, y)))

    parts = [f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
             f'<title>{escape(title)}</title><text x="0" y="16" class="chart-title">{escape(title)}</text>',
             f'<line x1="{left}" y1="{sy(0)}" x2="{width - 10}" y2="{sy(0)}" stroke="#444"/>',
             f'<line x1="{left}" y1="{sy(0)}" x2="{left}" y2="{sy(1)}" stroke="#444"/>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<text x="{left - 4}" y="{sy(tick) + 4:.0f}" text-anchor="end">{tick:.2f}</text>')
    for i in range(5):
        tick = max(xs) * i / 4
        parts.append(f'<text x="{sx(tick):.1f}" y="{sy(0) + 14:.0f}" text-anchor="middle">{tick:.3g}</text>')
    parts.append(f'<text x="{(width + left) / 2:.0f}" y="{height - 6}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text x="12" y="{top_margin - 6}">{escape(y_label)}</text>')
    if len(curve) > 1:
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(curve))
        parts.append(f'<path d="{path}" fill="none" stroke="{COLOURS[1]}" stroke-width="2" stroke-dasharray="5,3"/>')
    for x, y, low, high in points:
        if low is not None and high is not None:
            parts.append(f'<line x1="{sx(x):.1f}" y1="{sy(low):.1f}" x2="{sx(x):.1f}" y2="{sy(high):.1f}" stroke="{COLOURS[0]}"/>')
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{COLOURS[0]}"><title>{x:g} labels: {y:.3f}</title></circle>')
    if not points:
        parts.append(f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle">no measured model version yet</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
