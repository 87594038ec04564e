"""The leaderboard's charts as inline SVG (no JS, no image files): ratings with their 95% CIs,
and the pairwise win-rate heatmap. Model names are escaped; they come from users."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any


def ci_chart(rows: Sequence[dict[str, Any]], *, width: int = 520, row_height: int = 24) -> str:
    """One line per model (best first): the rating as a dot, its 95% CI as a bar."""
    if not rows:
        return '<svg width="100%" height="40" role="img" aria-label="no ratings yet"><text x="8" y="24" font-size="13">no votes yet</text></svg>'
    label_w, pad = 150, 14
    lows = [r["ci_low"] for r in rows]
    highs = [r["ci_high"] for r in rows]
    lo, hi = min(lows), max(highs)
    if hi - lo < 1:
        lo, hi = lo - 10, hi + 10
    span = hi - lo
    lo, hi = lo - 0.05 * span, hi + 0.05 * span
    height = pad * 2 + row_height * len(rows) + 18

    def x(value: float) -> float:
        return label_w + (value - lo) / (hi - lo) * (width - label_w - pad)

    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="ratings with 95% confidence intervals" style="max-width:{width}px">']
    for i in range(5):
        value = lo + (hi - lo) * i / 4
        parts.append(f'<line x1="{x(value):.1f}" y1="{pad}" x2="{x(value):.1f}" y2="{height - 18}" stroke="#eee"/>')
        parts.append(f'<text x="{x(value):.1f}" y="{height - 4}" font-size="11" text-anchor="middle">{value:.0f}</text>')
    for i, row in enumerate(rows):
        y = pad + row_height * i + row_height / 2
        parts.append(f'<text x="{label_w - 8}" y="{y + 4:.1f}" font-size="12" text-anchor="end">{escape(_short(row["model"]))}</text>')
        parts.append(f'<line x1="{x(row["ci_low"]):.1f}" y1="{y:.1f}" x2="{x(row["ci_high"]):.1f}" y2="{y:.1f}" stroke="#2563eb" stroke-width="3"/>')
        parts.append(f'<circle cx="{x(row["rating"]):.1f}" cy="{y:.1f}" r="4" fill="#1e3a8a"><title>{escape(row["model"])}: {row["rating"]:.0f} [{row["ci_low"]:.0f}, {row["ci_high"]:.0f}]</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def win_rate_heatmap(models: Sequence[str], matrix: Sequence[Sequence[float | None]], *, cell: int = 38) -> str:
    """P(row model beats column model), ties excluded; blank where they never met."""
    if not models:
        return ""
    label_w, top = 130, 76
    n = len(models)
    width, height = label_w + cell * n + 4, top + cell * n + 4
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="pairwise win rates" style="max-width:{width}px">']
    for j, model in enumerate(models):
        cx = label_w + cell * j + cell / 2
        parts.append(f'<text transform="translate({cx:.1f},{top - 6}) rotate(-50)" font-size="11">{escape(_short(model))}</text>')
    for i, model in enumerate(models):
        y = top + cell * i
        parts.append(f'<text x="{label_w - 6}" y="{y + cell / 2 + 4:.1f}" font-size="11" text-anchor="end">{escape(_short(model))}</text>')
        for j in range(n):
            value = matrix[i][j]
            x = label_w + cell * j
            fill = "#f3f4f6" if value is None else _colour(value)
            parts.append(f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="{fill}">'
                         f'<title>{escape(model)} vs {escape(models[j])}: {"—" if value is None else f"{value:.2f}"}</title></rect>')
            if value is not None:
                parts.append(f'<text x="{x + cell / 2 - 1:.1f}" y="{y + cell / 2 + 3:.1f}" font-size="10" text-anchor="middle">{value:.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _short(name: str, limit: int = 20) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _colour(p: float) -> str:
    """Red (0) through white (0.5) to blue (1)."""
    p = min(1.0, max(0.0, p))
    if p < 0.5:
        t = p / 0.5
        r, g, b = 220, int(38 + (255 - 38) * t), int(38 + (255 - 38) * t)
    else:
        t = (p - 0.5) / 0.5
        r, g, b = int(255 - (255 - 37) * t), int(255 - (255 - 99) * t), int(255 - (255 - 235) * t)
    return f"#{r:02x}{g:02x}{b:02x}"
