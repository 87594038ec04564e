"""`arena demo`'s verdicts and summary: the regression gate of one candidate against another
on each split (with the exact McNemar test's verdict), and step 9, the final table and
`summary.json` (a mixin of `service.demo.Demo`, as `DemoData` and `DemoArena` are)."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.table import Table

from service.demo_arena import CHANGE_WORDS
from service.demo_data import DATASET, SPLITS, TASKS, N_

#: The benchmark has ~50–90 items: a margin of 0.05 could not be shown even for identical
#: candidates (the gate says so rather than guess); 0.1 is what this size can resolve.
GATE_MARGIN = 0.1

#: Every candidate the demo trains, in the order its tables list them.
FINAL = ("r1-full", "r1-coreset", "r2-curated", "r2-dpo")

#: The regression gate's verdicts as the demo prints them (translated where shown).
GATE_WORDS = (N_("PASS"), N_("REGRESSION"), N_("ERROR"))


class DemoSummary:
    def gate_against(self, baseline: str, candidate: str, *, show: bool = True) -> dict[str, dict[str, Any]]:
        """The regression gate of `candidate` against `baseline` on each split (printed
        unless `show` is false), with the two-sided exact McNemar test's verdict in `change`."""
        from evaluators.gate_scores import load_lm_eval_results
        from evaluators.regression import compare, exit_code

        _ = self._
        gates = {}
        for split in SPLITS:
            verdicts = compare(load_lm_eval_results(self.scores[split][baseline]["dir"]),
                               load_lm_eval_results(self.scores[split][candidate]["dir"]), default_margin=GATE_MARGIN,
                               metrics={TASKS[split]: "exact_match"}, tasks=[TASKS[split]])
            v = verdicts[0]
            gates[split] = {"status": v.status, "diff": v.diff, "ci": [v.ci_low, v.ci_high], "exit_code": exit_code(verdicts),
                            "reason": v.reason, "n": v.n_paired, "discordant": v.discordant, "p_value": v.p_decrease,
                            "improved": v.significant_increase,
                            "change": "better" if v.significant_increase else "worse" if v.significant_decrease else "same"}
            if not show:
                continue
            label = _("held-out test split") if split == "test" else _("debug split (traced, curated on)")
            self.console.print(_("regression gate {candidate} vs {baseline} on the {split} (exact match, non-inferiority margin "
                                 "{margin}, {n} paired items): [bold]{status}[/] diff {diff:+.3f} CI [{low:+.3f}, {high:+.3f}]; "
                                 "exact McNemar p={p:.3g}").format(
                candidate=candidate, baseline=baseline, split=label, margin=GATE_MARGIN, n=v.n_paired, status=_(v.status.upper()),
                diff=v.diff, low=v.ci_low, high=v.ci_high, p=v.p_decrease))
        return gates

    def finish(self) -> None:
        _ = self._
        self.step(9, _("Summary"))
        board = {r["model"]: r for r in self.summary["final_board"]}
        table = Table(_("candidate"), _("data"), _("exact match, held-out test split"), _("debug split"),
                      _("judge rating (95% CI)"), _("gate vs r1-full"), title=_("Round 2 vs round 1"))
        data = {"r1-full": f"{DATASET}@1", "r1-coreset": "facts-coreset@1", "r2-curated": f"{DATASET}@2 " + _("(curated)"),
                "r2-dpo": "r2-curated + DPO " + _("({n} pairs)").format(n=self.summary["dpo"]["pairs"])}
        for name in FINAL:
            t, d, b = self.scores["test"][name], self.scores["debug"][name], board.get(name, {})
            rating = f"{b['rating']:.0f} ({b['ci_low']:.0f}–{b['ci_high']:.0f})" if b else "-"
            gate = {"r2-curated": _(self.gate["status"].upper()), "r1-full": _("baseline"),
                    "r2-dpo": _(CHANGE_WORDS[self.gate_dpo["test"]["change"]]) + " " + _("(vs r2-curated)")}.get(name, "-")
            table.add_row(name, data[name], f"{t['exact_match']:.3f} ± {t['stderr']:.3f}",
                          f"{d['exact_match']:.3f} ± {d['stderr']:.3f}", rating, gate)
        self.console.print(table)
        test = self.scores["test"]
        improved = bool(self.gates["test"]["improved"])
        top = self.summary["final_board"][0]["model"] if self.summary["final_board"] else None
        self.summary.update(
            scores={split: {k: {"exact_match": v["exact_match"], "stderr": v["stderr"], "eval": v["eval"]} for k, v in by.items()}
                    for split, by in self.scores.items()},
            held_out={"split": "test", "n": self.gates["test"]["n"], "round1": test["r1-full"]["exact_match"],
                      "round2": test["r2-curated"]["exact_match"], "discordant": self.gates["test"]["discordant"],
                      "test": "exact McNemar", "p_value": self.gates["test"]["p_value"], "improved": improved},
            debug={"split": "debug", "note": "traced and curated on: not evidence of a gain",
                   "n": self.gates["debug"]["n"], "round1": self.scores["debug"]["r1-full"]["exact_match"],
                   "round2": self.scores["debug"]["r2-curated"]["exact_match"], "p_value": self.gates["debug"]["p_value"]},
            gate=self.gate, gates=self.gates, report_id=self.report_id, report_dir=str(self.out / "report"),
            improved=improved, leaderboard_top=top, wall_s=round(time.perf_counter() - self.t0, 1),
        )
        self.step(None, "end")
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=1, default=str, ensure_ascii=False))
        verdict = (_("r2-curated beats r1-full on the held-out test split") if improved
                   else _("r2-curated is NOT shown to beat r1-full on the held-out test split"))
        self.console.print(_("{verdict} ({new:.3f} vs {old:.3f}, exact McNemar p={p:.3g}, n={n}); leaderboard top: {top}; "
                             "{wall:.0f} s in all. Summary: {path}").format(
            verdict=verdict, new=test["r2-curated"]["exact_match"], old=test["r1-full"]["exact_match"],
            p=self.gates["test"]["p_value"], n=self.gates["test"]["n"], top=top, wall=self.summary["wall_s"],
            path=self.out / "summary.json"))
        self.console.print("[dim]" + _("seconds per step: {profile}").format(
            profile=", ".join(f"{k} {v:.0f}" for k, v in self.summary["profile_s"].items())) + "[/]")
