"""Small server-side SVG charts (no JS build step, no image files): loss curves."""

from __future__ import annotations

from html import escape


def line_chart(series: dict[str, list[tuple[float, float]]], *, width: int = 640, height: int = 280, x_label: str = "step", y_label: str = "loss") -> str:
    """An inline SVG line chart of named (x, y) series, with axes, ticks and a legend."""
    colours = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"]
    points = [p for s in series.values() for p in s]
    if not points:
        return f'<svg width="{width}" height="60" role="img"><text x="10" y="30">no points yet</text></svg>'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    pad_l, pad_r, pad_t, pad_b = 56, 16, 16, 40

    def sx(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * (width - pad_l - pad_r)

    def sy(y: float) -> float:
        return height - pad_b - (y - y0) / (y1 - y0) * (height - pad_t - pad_b)

    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{escape(y_label)} by {escape(x_label)}" style="max-width:{width}px">']
    parts.append(f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - pad_r}" y2="{height - pad_b}" stroke="#888"/>')
    parts.append(f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{height - pad_b}" stroke="#888"/>')
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        parts.append(f'<text x="{pad_l - 6}" y="{sy(yv) + 4:.1f}" font-size="11" text-anchor="end">{yv:.3g}</text>')
        xv = x0 + (x1 - x0) * i / 4
        parts.append(f'<text x="{sx(xv):.1f}" y="{height - pad_b + 16}" font-size="11" text-anchor="middle">{xv:.0f}</text>')
    parts.append(f'<text x="{(width + pad_l) / 2}" y="{height - 6}" font-size="12" text-anchor="middle">{escape(x_label)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        if not pts:
            continue
        colour = colours[i % len(colours)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(pts))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for x, y in pts if len(pts) < 40 else []:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>')
        parts.append(f'<text x="{width - pad_r - 4}" y="{pad_t + 14 + 16 * i}" font-size="12" text-anchor="end" fill="{colour}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
