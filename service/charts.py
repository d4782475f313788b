"""Bar charts as inline SVG, drawn on the server: no script, no external asset, readable by a
screen reader (each chart has a title, each bar a ``<title>`` with its figure)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 300, 150
LEFT, BOTTOM, TOP = 34, 22, 14
COLOURS = {"bar": "#2f6fb2", "alert": "#c2410c", "axis": "#8a94a3", "text": "#3b4452"}


def bars(
    title: str,
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    unit: str = "",
    maximum: float | None = None,
    alert: bool = False,
) -> Markup:
    """One series as vertical bars; ``None`` is "no data" (drawn as a dash, not as zero)."""
    known = [v for v in values if v is not None]
    top = maximum if maximum is not None else max([*known, 1.0])
    top = top or 1.0
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    step = plot_w / max(len(values), 1)
    bar_w = min(max(step * 0.62, 2), 34)
    fill = COLOURS["alert" if alert else "bar"]
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for frac in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - frac)
        label = f"{top * frac:g}{unit}"
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{COLOURS["axis"]}" stroke-width="0.5" stroke-dasharray="2 3"/>'
            f'<text x="{LEFT - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end" '
            f'fill="{COLOURS["text"]}">{escape(label)}</text>'
        )
    every = max(1, -(-len(labels) // 4))
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x = LEFT + i * step + (step - bar_w) / 2
        cx = x + bar_w / 2
        if value is None:
            parts.append(
                f'<text x="{cx:.1f}" y="{TOP + plot_h - 3:.1f}" font-size="10" '
                f'text-anchor="middle" fill="{COLOURS["axis"]}">&#8211;</text>'
            )
        else:
            h = plot_h * min(value, top) / top
            parts.append(
                f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" rx="2" fill="{fill}"><title>{escape(label)}: '
                f"{value:g}{escape(unit)}</title></rect>"
            )
            if len(values) <= 8 or value:
                parts.append(
                    f'<text x="{cx:.1f}" y="{TOP + plot_h - h - 3:.1f}" font-size="9" '
                    f'text-anchor="middle" fill="{COLOURS["text"]}">{value:g}</text>'
                )
        if i % every == 0:
            parts.append(
                f'<text x="{cx:.1f}" y="{HEIGHT - BOTTOM + 14:.1f}" font-size="10" '
                f'text-anchor="middle" fill="{COLOURS["text"]}">{escape(label)}</text>'
            )
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - 8}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" '
        f'stroke="{COLOURS["axis"]}"/></svg>'
    )
    return Markup("".join(parts))
