"""`arena ratings`: the leaderboard from a battles file.

`arena ratings BATTLES [--bootstrap 1000] [--style-control] [--lc-baseline MODEL] [--anchor MODEL=RATING] [--json]`
is shorthand for `arena ratings fit BATTLES ...`; `ratings` is a group so that
subcommands (`arena ratings explain`, `calibration`, `rebuild`) can sit beside the default fit.
"""

from __future__ import annotations

import math
from pathlib import Path

import click
import msgspec

from service.cli.common import battles_file_errors
from service.cli.ratings_view import plot_board, print_table, style_lines
from service.errors import InvalidInput

_PLOT_SUFFIXES = (".svg", ".png")


class DefaultCommandGroup(click.Group):
    """A click group that runs `default_command` when the first argument is not one of its
    subcommands: `arena ratings battles.json` means `arena ratings fit battles.json`."""

    def __init__(self, *args: object, default_command: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.default_command = default_command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return ["BATTLES [OPTIONS] | COMMAND [ARGS]..."]


@click.group(
    "ratings",
    cls=DefaultCommandGroup,
    default_command="fit",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
def ratings_cmd() -> None:
    """Bradley–Terry leaderboard with bootstrap CIs from FastChat-format battles.

    `arena ratings BATTLES ...` runs `fit` (see `arena ratings fit --help`)."""


@ratings_cmd.command("fit")
@click.argument("battles_path", metavar="BATTLES", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--bootstrap", "rounds", default=1000, show_default=True, type=click.IntRange(min=0), help="Bootstrap rounds for the CIs (0: none).")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--style-control", is_flag=True, help="Rate with answer length (and markdown, when texts are given) held constant.")
@click.option("--lc-baseline", metavar="MODEL", help="Also give each model's length-controlled win rate against MODEL (AlpacaEval 2.0 LC).")
@click.option("--anchor", metavar="MODEL=RATING", help="Pin one model's rating (default: every component's mean is 1000).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {model, rating, ci_low, ci_high, rank_ub, votes, win_rate, elo, flip_votes}.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE.svg|png", help="Write the CI chart and win-rate heatmap.")
@click.option("--category", metavar="CATEGORY", help="Rate only the battles in CATEGORY: a tag (language=zh, length=long, "
              "task_type=math, hard) or a pool category. A file exported here (`arena battles export`) keeps the tags "
              "the service counted each vote under, so the board is the service's; a vote logged before tags existed "
              "has none and is in no tag's board, as on the service. Other files (public dumps) get tags computed: "
              "language and length from the first prompt, hard and task types from their category_tag.")
@click.option("--skip-invalid", is_flag=True, help="Skip malformed records (and say how many) instead of failing.")
@click.option("--no-elo", "no_elo", is_flag=True, help="Skip the online Elo column (its sequential pass is ~a third of reading a big file).")
def fit_cmd(
    battles_path: Path,
    rounds: int,
    seed: int,
    style_control: bool,
    lc_baseline: str | None,
    anchor: str | None,
    as_json: bool,
    plot_path: Path | None,
    category: str | None,
    skip_invalid: bool,
    no_elo: bool,
) -> None:
    """Fit and print the leaderboard for the battles in BATTLES (JSONL, JSON array, Parquet or CSV).

    Columns: rank upper bound, model, BT rating (Elo scale: 400 points = 10:1 odds),
    95% CI as +above/−below, votes, win rate (ties count half), online Elo, and Flip: the
    votes whose removal would rank the next model above this one (`arena ratings explain`).
    With --json and --style-control, ratings are the style-adjusted ones (plus
    `rating_raw`); coefficients and notes go to stderr. --lc-baseline adds `lc_win_rate`,
    `lc_ci` and `lc_length_coefficient` to the JSON rows (None for models that never met it)."""
    anchor_pair = _parse_anchor(anchor)
    if plot_path is not None and plot_path.suffix.lower() not in _PLOT_SUFFIXES:
        raise InvalidInput(f"--plot {plot_path}: expected a .svg or .png file name")
    # Without style control only who met whom, who won and when matter: streamed into counts
    # and Elo (memory O(models²)); a malformed file falls back to the validating reader.
    tallied = None if style_control or lc_baseline or category else _start_tally(battles_path, elo=not no_elo)
    from arena.counts import PairCounts
    from arena.ratings import bradley_terry, leaderboard, online_elo
    from arena.style import style_control as fit_style

    if not (style_control or lc_baseline):
        tally = tallied() if tallied is not None else None
        if tally is None:  # a category, or a record only the validating reader types: its batches, folded
            tally = _tally_validated(battles_path, skip_invalid, _InCategory(category, slim=True) if category else None, not no_elo)
        battles, counts, elo = None, tally.counts, tally.elo
    else:
        # Only the category's battles are kept (with the texts style control and LC read),
        # so a public dump's conversations are never held whole.
        battles = _load(battles_path, skip_invalid, _InCategory(category, slim=False) if category else None)
        counts, elo = PairCounts.from_battles(battles), None if no_elo else online_elo(battles)
    if anchor_pair is not None and anchor_pair[0] not in counts.models:
        raise InvalidInput(f"--anchor {anchor}: model {anchor_pair[0]!r} is not in {battles_path}")

    style = None
    if style_control:
        try:
            style = fit_style(battles, bootstrap=rounds, seed=seed, anchor=anchor_pair)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    board = leaderboard(counts, elo=elo, bootstrap=rounds, seed=seed, anchor=anchor_pair, style=style)
    raw = bradley_terry(counts, anchor=anchor_pair).as_dict() if style is not None else None
    lc = None
    if lc_baseline is not None:
        from service.cli.calibration import lc_table

        lc = {r["model"]: r for r in lc_table(battles, lc_baseline, rounds, seed, battles_path)}

    if as_json:
        rows = [msgspec.structs.asdict(row) for row in board.rows]
        if raw is not None:
            for row in rows:
                row["rating_raw"] = raw[row["model"]]
        if lc is not None:
            for row in rows:
                mine = lc.get(row["model"], {})
                row["lc_win_rate"] = 0.5 if row["model"] == lc_baseline else mine.get("lc_win_rate")
                row["lc_ci"] = mine.get("ci")
                row["lc_length_coefficient"] = mine.get("length_coefficient")
        click.echo(msgspec.json.encode(rows).decode())
        for line in style_lines(board) + [f"note: {note}" for note in board.notes]:
            click.echo(line, err=True)
    else:
        print_table(board, battles_path, raw, category)
        if lc is not None:
            from service.cli.calibration import print_lc

            print_lc(list(lc.values()), lc_baseline)
    if plot_path is not None:
        plot_board(counts, board, plot_path)
        if not as_json:
            click.echo(f"wrote {plot_path}")


@ratings_cmd.command("explain")
@click.argument("battles_path", metavar="BATTLES", type=click.Path(path_type=Path, dir_okay=True))
@click.argument("upper")
@click.argument("lower")
@click.option("--show", default=20, show_default=True, type=click.IntRange(min=0), help="Battles to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the removals and the battles as JSON.")
@click.option("--skip-invalid", is_flag=True, help="Skip malformed records (and say how many) instead of failing.")
def explain_cmd(battles_path: Path, upper: str, lower: str, show: int, as_json: bool, skip_invalid: bool) -> None:
    """The fewest votes whose removal rates LOWER above UPPER, and which battles they are.

    Votes are taken in order of their influence on the Bradley–Terry fit (most first) and
    the count is confirmed by refitting without them (`arena/fragility.py`). Votes of one
    pair and outcome are interchangeable; the latest ones are listed."""
    from arena.fragility import flip

    # Counts as `fit` reads them (the streaming tally, else the validating reader's batches);
    # then one more pass lists the removed votes' battles: the file is never held.
    tallied = _start_tally(battles_path, elo=False)
    counts = (tallied() or _tally_validated(battles_path, skip_invalid, None, False)).counts
    for name in (upper, lower):
        if name not in counts.models:
            raise InvalidInput(f"model {name!r} is not in {battles_path} (it has {', '.join(counts.models[:20])})")
    if upper == lower:
        raise InvalidInput("name two different models")
    result = flip(counts, upper, lower)
    rows = _latest_votes(battles_path, skip_invalid, result.removals)
    if as_json:
        click.echo(msgspec.json.encode({**msgspec.structs.asdict(result), "battles": rows}).decode())
        return
    if result.votes == 0:
        click.echo(f"{lower} already rates above {upper}: nothing to remove")
        return
    if result.votes is None:
        click.echo(f"no removal of votes rates {lower} above {upper} (influence estimate: "
                   f"{result.linear_estimate if result.linear_estimate is not None else 'none'})")
        return
    how = "confirmed by refitting without them" if result.confirmed else "not confirmed within the refit budget"
    click.echo(f"removing {result.votes} of {counts.n_battles} votes rates {lower} above {upper} "
               f"({how}; the one-step influence estimate was {result.linear_estimate}):")
    for r in result.removals:
        what = {"model_a": f"{r.model_a} beat {r.model_b}", "model_b": f"{r.model_b} beat {r.model_a}",
                "tie": f"{r.model_a} tied {r.model_b}", "tie (bothbad)": f"{r.model_a} and {r.model_b} both bad"}[r.winner]
        click.echo(f"  {r.count} × {what}")
    for row in rows[:show]:
        click.echo(f"  battle #{row['index']}: {row['model_a']} vs {row['model_b']}, {row['winner']}"
                   + (f", question {row['question_id']}" if row["question_id"] else "")
                   + (f", by {row['judge']}" if row["judge"] else ""))
    if len(rows) > show:
        click.echo(f"  … and {len(rows) - show} more (--show N, or --json)")


def _start_tally(battles_path: Path, *, elo: bool):
    """A function giving the file's `arena.tally.Tally` (None: read it the validating way).
    The file is read beside this process while it imports the leaderboard's modules (scipy
    and the fits: ~0.3 s of the command), and by both once they are loaded
    (`arena.tally_split.start_tally`)."""
    from arena.tally_split import start_tally

    if not battles_path.is_file():
        raise InvalidInput(f"{battles_path}: no such file")
    started = start_tally(battles_path, elo=elo)

    def tally():
        found = started()
        return found if found is not None and found.n_battles else None

    return tally


class _InCategory:
    """A `read_battles(keep=...)` filter: the battles in `category` (a tag,
    `service.prompt_categories.battle_tags`, or the pool category an export keeps), with
    only what the fits read when `slim`; it counts the categories it meets, for the error
    naming them when no battle is in `category`."""

    def __init__(self, category: str, *, slim: bool) -> None:
        from service.prompt_categories import parse_tag

        parse_tag(category)  # a malformed tag is an error, before the file is read
        self.category, self.slim = category, slim
        self.found: dict[str, int] = {}

    def __call__(self, battle):
        from arena.battles import Battle
        from service.prompt_categories import battle_tags

        ours = (battle.conv_metadata or {}).get("arena") if isinstance(battle.conv_metadata, dict) else None
        pool = ours.get("category") if isinstance(ours, dict) and isinstance(ours.get("category"), str) else None
        tags = set(battle_tags(battle)) | ({pool} if pool else set())
        for tag in tags:
            self.found[tag] = self.found.get(tag, 0) + 1
        if self.category not in tags:
            return None
        if not self.slim:
            return battle
        return Battle(model_a=battle.model_a, model_b=battle.model_b, winner=battle.winner, tstamp=battle.tstamp, weight=battle.weight)

    def nothing_in(self, battles_path: Path) -> InvalidInput:
        listed = ", ".join(f"{t} ({n})" for t, n in sorted(self.found.items(), key=lambda kv: -kv[1])[:20])
        return InvalidInput(f"--category {self.category[:80]!r}: no battle in {battles_path} is in it (found: {listed or 'none'})")


def _latest_votes(battles_path: Path, skip_invalid: bool, removals: list) -> list[dict]:
    """The battles each removal takes, the latest first (`removal.count` of them, of the
    removal's pair and outcome in either side order), numbered by their place among the
    file's valid battles: one pass over the file's batches, holding only those."""
    from collections import deque

    from arena.battle_stream import BattleBatches

    flipped = {"model_a": "model_b", "model_b": "model_a", "tie": "tie", "tie (bothbad)": "tie (bothbad)"}
    latest: list[deque] = [deque(maxlen=r.count) for r in removals]
    classes = {}
    for slot, r in enumerate(removals):
        classes[r.model_a, r.model_b, r.winner] = classes[r.model_b, r.model_a, flipped[r.winner]] = slot
    k = 0
    with battles_file_errors(battles_path, skip_invalid):
        for batch in (BattleBatches(battles_path, skip_invalid=skip_invalid) if removals else ()):
            for b in batch:
                slot = classes.get((b.model_a, b.model_b, b.winner))
                if slot is not None:
                    latest[slot].append({"index": k, "model_a": b.model_a, "model_b": b.model_b, "winner": b.winner,
                                         "question_id": b.question_id, "judge": b.judge, "tstamp": b.tstamp})
                k += 1
    return [row for kept in latest for row in reversed(kept)]


def _load(battles_path: Path, skip_invalid: bool, in_category: _InCategory | None = None):
    """The battles of BATTLES (only those `in_category` keeps, when given), with the CLI's
    one-line errors."""
    from arena.battles import read_battles

    with battles_file_errors(battles_path, skip_invalid):
        loaded = read_battles(battles_path, skip_invalid=skip_invalid, keep=in_category)
    _said_read(battles_path, loaded.skipped, len(loaded.battles), in_category)
    return loaded.battles


def _tally_validated(battles_path: Path, skip_invalid: bool, in_category: _InCategory | None, elo: bool):
    """Pair counts and Elo of BATTLES (of `in_category`'s battles, when given) read by the
    validating reader batch by batch (`arena.battle_stream`), never held whole, with the
    CLI's one-line errors."""
    from arena.battle_stream import BattleBatches
    from arena.tally import tally_battles

    with battles_file_errors(battles_path, skip_invalid):
        batches = BattleBatches(battles_path, skip_invalid=skip_invalid, keep=in_category)
        tally = tally_battles(batches, elo=elo)
    _said_read(battles_path, batches.skipped, tally.n_battles, in_category)
    return tally


def _said_read(battles_path: Path, skipped: list, kept: int, in_category: _InCategory | None) -> None:
    """Say how many records were skipped; no battle (in the category) is an error."""
    if skipped:
        click.echo(f"skipped {len(skipped)} invalid record{'s' if len(skipped) != 1 else ''}", err=True)
    if not kept:
        raise in_category.nothing_in(battles_path) if in_category is not None else InvalidInput(f"{battles_path}: no battles to rate")


@ratings_cmd.command("rebuild")
def rebuild_cmd() -> None:
    """Recount the service's human and judge pair counts from the votes log (skipping excluded reviewers)."""
    from service.cli.common import open_store

    with open_store() as store:
        counted = store.rebuild_aggregates()
    click.echo(f"rebuilt from the log: {counted['human']} human votes, {counted['judge']} judge verdicts counted")


def _parse_anchor(text: str | None) -> tuple[str, float] | None:
    if text is None:
        return None
    model, sep, value = text.rpartition("=")
    try:
        rating = float(value)
    except ValueError:
        rating = math.nan
    if not sep or not model or not math.isfinite(rating):
        raise InvalidInput(f"--anchor {text!r}: expected MODEL=RATING, e.g. --anchor base=1000")
    return model, rating


# Registers `arena ratings calibration` (it imports this module's group, so it comes last).
from service.cli import calibration as _calibration  # noqa: E402,F401
