"""How `arena ratings` shows a leaderboard: the table, the style coefficients' line, and
the plot (CI chart and win-rate heatmap)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from service.errors import InvalidInput

if TYPE_CHECKING:  # the arena imports are deferred: `arena --help` must stay fast
    from arena.counts import PairCounts
    from arena.ratings import Leaderboard


def style_lines(board: Leaderboard) -> list[str]:
    coefficients = board.style_coefficients
    if not coefficients:
        return []
    ci = board.style_coefficient_ci or {}
    parts = []
    for name, value in coefficients.items():
        low, high = ci.get(name, (value, value))
        parts.append(f"{name} {value:+.3f} [{low:+.3f}, {high:+.3f}]")
    return ["style coefficients (log-odds per SD of the normalised A−B gap, 95% CI): " + "; ".join(parts)]


def print_table(board: Leaderboard, source: Path, raw: dict[str, float] | None, category: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    title = (
        f"{source.name}: {board.n_battles} battles, {len(board.rows)} models, "
        f"anchor {board.anchor}, {board.bootstrap_rounds} bootstrap rounds"
    )
    if raw is not None:
        title += ", style-controlled"
    if category:
        from rich.markup import escape

        title += f", category {escape(category)}"
    table = Table(title=title, title_justify="left")
    table.add_column("Rank (UB)", justify="right")
    table.add_column("Model")
    table.add_column("Rating", justify="right")
    table.add_column("95% CI", justify="right")
    if raw is not None:
        table.add_column("Raw BT", justify="right")
    table.add_column("Votes", justify="right")
    table.add_column("Win rate", justify="right")
    table.add_column("Elo", justify="right")
    table.add_column("Flip", justify="right")  # votes whose removal swaps this row with the next
    for row in board.rows:
        cells = [
            str(row.rank_ub),
            row.model,
            f"{row.rating:.1f}",
            f"+{row.ci_high - row.rating:.1f}/−{row.rating - row.ci_low:.1f}",
        ]
        if raw is not None:
            cells.append(f"{raw[row.model]:.1f}")
        cells += [
            str(row.votes),
            "—" if row.win_rate is None else f"{row.win_rate:.1%}",
            "—" if row.elo is None else f"{row.elo:.1f}",
            "—" if row.flip_votes is None else str(row.flip_votes),
        ]
        table.add_row(*cells)
    console.print(table)
    for line in style_lines(board):
        console.print(line, highlight=False)
    for note in board.notes:
        console.print(f"note: {note}", style="yellow", highlight=False)


def plot_board(counts: PairCounts, board: Leaderboard, path: Path) -> None:
    """The CI chart (left) and the pairwise win-rate heatmap, ties excluded (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure

    from arena.counts import win_rate_matrix

    rows = board.rows
    models = [r.model for r in rows]
    n = len(models)
    fig = Figure(figsize=(6 + 0.55 * n, 4.5 + 0.1 * n), layout="constrained")
    ax_ci, ax_heat = fig.subplots(1, 2, width_ratios=[1, 1])
    x = np.arange(n)
    rating = np.array([r.rating for r in rows])
    below = rating - np.array([r.ci_low for r in rows])
    above = np.array([r.ci_high for r in rows]) - rating
    ax_ci.errorbar(x, rating, yerr=[below, above], fmt="o", capsize=4)
    ax_ci.set_xticks(x, models, rotation=45, ha="right")
    ax_ci.set_ylabel("rating")
    kind = "style-controlled BT" if board.style_coefficients else "BT"
    ax_ci.set_title(f"{kind} rating, 95% CI ({board.bootstrap_rounds} bootstrap rounds)")
    ax_ci.grid(axis="y", alpha=0.3)

    order = [counts.models.index(m) for m in models]
    matrix = win_rate_matrix(counts)[np.ix_(order, order)]
    image = ax_heat.imshow(np.ma.masked_invalid(matrix), cmap="RdBu", vmin=0, vmax=1)
    ax_heat.set_xticks(x, models, rotation=45, ha="right")
    ax_heat.set_yticks(x, models)
    ax_heat.set_xlabel("model B")
    ax_heat.set_ylabel("model A")
    ax_heat.set_title("P(A beats B), ties excluded")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if not np.isnan(matrix[i, j]):
                    ax_heat.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax_heat, shrink=0.8)
    try:
        fig.savefig(path)
    except OSError as exc:
        raise InvalidInput(f"--plot {path}: cannot write ({exc.strerror or exc})") from None
