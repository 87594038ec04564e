"""`arena ratings calibration BATTLES`: each judge measured against the human votes, and
`arena ratings BATTLES --lc-baseline MODEL`'s length-controlled win rates (printed by `fit`)."""

from __future__ import annotations

from pathlib import Path

import click
import msgspec

from service.cli.ratings import _load, ratings_cmd
from service.errors import InvalidInput


@ratings_cmd.command("calibration")
@click.argument("battles_path", metavar="BATTLES", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--judge", "judges", multiple=True, metavar="NAME",
              help="A `judge` value that is a judge, not a reviewer (repeatable; `llm:*`, `reference:*` and the service's "
                   "stored board are recognised without it).")
@click.option("--bootstrap", "rounds", default=1000, show_default=True, type=click.IntRange(min=0), help="Bootstrap rounds for the CIs (0: none).")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (`arena.calibration.Calibration`).")
@click.option("--skip-invalid", is_flag=True, help="Skip malformed records (and say how many) instead of failing.")
def calibration_cmd(battles_path: Path, judges: tuple[str, ...], rounds: int, seed: int, as_json: bool, skip_invalid: bool) -> None:
    """How far each judge in BATTLES can be trusted, measured on the battles humans voted too.

    Per judge: verdicts, agreement with humans w/ tie and w/o tie (MT-Bench's two settings;
    a judge's two orders count as one verdict, a tie unless both name the same winner) with
    95% CIs, the order-flip rate, the length coefficient of a style-control fit on its
    battles, self-preference when its model is a candidate, and the mark `BELOW HUMAN` when
    its agreement CI (w/o tie; w/ tie for a judge with no decisive verdict) lies wholly below
    the human–human agreement on double-voted battles. BATTLES holds both boards, e.g. from `arena battles export`."""
    from arena.calibration import calibrate_judges

    battles = _load(battles_path, skip_invalid)
    report = calibrate_judges(battles, judges=set(judges), bootstrap=rounds, seed=seed)
    if not report.judges:
        raise InvalidInput(f"{battles_path}: no judge verdicts (a `judge` of llm:* or reference:*, the service's board, "
                           "or one named with --judge)")
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
        return
    human = report.human_agreement
    click.echo(f"{battles_path.name}: {report.human_votes} human votes; human–human agreement on {human.matched} "
               f"double-voted battles: w/ tie {_rate(human.agreement, human.ci)}, w/o tie {_rate(human.agreement_decisive, human.ci_decisive)}")
    for j in report.judges:
        a = j.agreement
        mark = {True: "  BELOW HUMAN AGREEMENT", False: "", None: "  (not compared: no human–human or judge–human agreement)"}[j.below_human]
        click.echo(f"\n{j.judge}: {j.verdicts} verdicts, {j.judgements} judgements, {a.matched} shared with humans{mark}")
        click.echo(f"  agreement with humans: w/ tie {_rate(a.agreement, a.ci)} ({a.pairs} pairs), "
                   f"w/o tie {_rate(a.agreement_decisive, a.ci_decisive)} ({a.decisive_pairs} pairs)")
        f = j.flips
        click.echo(f"  order flips: {f.flipped} of {f.judged_both_orders} judged in both orders"
                   + (f" ({_rate(f.rate, f.ci)})" if f.rate is not None else ""))
        if j.length_coefficient is not None:
            low, high = j.length_ci or (j.length_coefficient, j.length_coefficient)
            click.echo(f"  length coefficient: {j.length_coefficient:+.3f} [{low:+.3f}, {high:+.3f}] "
                       "(log-odds per SD of the length gap; > 0 favours longer answers)")
        s = j.self_preference
        if s is not None and s.difference is not None:
            low, high = s.ci or (s.difference, s.difference)
            click.echo(f"  self-preference ({s.model}, {s.items} items): judge {s.judge_win_rate:.0%} vs humans "
                       f"{s.human_win_rate:.0%}, difference {s.difference:+.0%} [{low:+.0%}, {high:+.0%}]"
                       + ("  SELF-PREFERRING" if s.flagged else ""))
        for note in j.notes:
            click.echo(f"  note: {note}")
    click.echo(f"\n{report.rule}")


def _rate(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1%}" + (f" [{ci[0]:.1%}, {ci[1]:.1%}]" if ci is not None else "")


def lc_table(battles: list, baseline: str, rounds: int, seed: int, source: Path) -> list[dict]:
    """The `--lc-baseline` rows (also printed, unless the caller prints JSON)."""
    from arena.length_control import length_controlled_win_rates

    if not any(baseline in (b.model_a, b.model_b) for b in battles):
        raise InvalidInput(f"--lc-baseline {baseline}: model {baseline!r} has no battles in {source}")
    try:
        rows = length_controlled_win_rates(battles, baseline, bootstrap=rounds, seed=seed)
    except ValueError as exc:
        raise InvalidInput(f"--lc-baseline: {exc}") from None
    return [msgspec.structs.asdict(r) for r in rows]


def print_lc(rows: list[dict], baseline: str) -> None:
    """LC win rates as text, one model a line."""
    click.echo(f"length-controlled win rate against {baseline} (AlpacaEval 2.0 LC; {baseline} is 50% by construction):")
    for r in rows:
        ci = f" [{r['ci'][0]:.1%}, {r['ci'][1]:.1%}]" if r["ci"] else ""
        click.echo(f"  {r['model']:<24} LC {r['lc_win_rate']:.1%}{ci}  raw {r['win_rate']:.1%}  "
                   f"length coef {r['length_coefficient']:+.2f}  ({r['battles']} battles)")
