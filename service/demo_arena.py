"""The demo's people steps (`service.demo`): scripted reviewers vote in the arena and correct
answers that are both wrong, an admin accepts the corrections, curation adds them to the
next dataset, and a DPO candidate learns from the votes.

The reviewers are **simulated** and say so everywhere they appear: each knows the prompt's
gold answer (the debug split's reference — nothing of the held-out test split reaches
them), prefers the answer that matches it (the reference judge's exact-match rule), calls a
tie when both do, and votes both-bad and writes the gold answer as a correction when neither
does. Battles, votes and corrections go through the service's own functions — the ones
behind `/api/battles`, its vote and its corrections — on the demo's store.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import msgspec
from rich.table import Table

from service.demo_data import N_

#: Scripted reviewers' names: several, as the per-reviewer rate limits expect.
REVIEWERS = tuple(f"simulated-reviewer-{k}" for k in range(1, 5))
#: The DPO step's settings: few pairs (tens), so a few passes at a LoRA's learning rate.
DPO_CONFIG = {"beta": 0.1, "lr": 1e-3, "max_steps": 24, "batch_size": 4, "logging_steps": 4, "seed": 0}
#: A paired comparison's outcome (the two-sided exact McNemar test at the gate's alpha).
CHANGE_WORDS = {"better": N_("better"), "worse": N_("worse"), "same": N_("no significant change")}
CHOICE_WORDS = {"a": N_("A better"), "b": N_("B better"), "tie": N_("tie"), "both_bad": N_("both bad")}


class DemoArena:
    """The arena steps of `service.demo.Demo` (which supplies the store, settings, console)."""

    _: Any
    summary: dict[str, Any]

    def arena_round(self, battles: int) -> None:
        """Step 5: `battles` arena battles between the round-1 candidates, each voted by a
        simulated reviewer; both-bad ones corrected; the corrections accepted by the admin."""
        from service.battles import create_battle, set_active
        from service.corrections import decide_correction, list_corrections, submit_correction
        from service.judging import reference_judge
        from service.leaderboards import board_view
        from service.serving import Serving

        _ = self._
        self.step(5, _("Arena: simulated reviewers vote on {names}, and correct answers both wrong").format(
            names=" vs ".join(self.round1)))
        # Scripted reviewers vote as fast as the script runs: the per-reviewer pace limits
        # (there against people clicking through) are lifted for them, and only for them.
        votes_settings = msgspec.structs.replace(self.settings, min_vote_s=0.0, votes_per_minute=10**6,
                                                 votes_per_minute_per_address=10**6, battles_per_minute_per_address=0)
        reviewer = reference_judge("exact_match", name="simulated reviewer", allow_both_bad=True)
        rng = random.Random(0)
        store = self.store.store

        async def run() -> tuple[Counter, int]:
            from service.battles import cast_vote

            await set_active(store, self.settings, self.round1, True)
            serving = Serving(self.settings, store)
            choices: Counter[str] = Counter()
            try:
                for k in range(battles):
                    who = REVIEWERS[k % len(REVIEWERS)]
                    battle = await create_battle(store, serving, self.settings, reviewer=who, rng=rng)
                    choice = reviewer.judge(battle["prompt"], battle["answer_a"], battle["answer_b"], battle["reference"]).choice
                    choice = choice or "tie"
                    await cast_vote(store, votes_settings, battle["id"], choice, reviewer=who)
                    choices[choice] += 1
                    if choice == "both_bad":
                        await submit_correction(store, self.settings, battle["id"], reviewer=who, text=battle["reference"])
            finally:
                serving.close()
            # The admin reads each correction against the battle's gold answer, as
            # `arena corrections accept` would be used after reading them.
            accepted = 0
            for c in await list_corrections(store, "pending"):
                await decide_correction(store, c.id, accept=True, by="demo-admin", note="matches the gold answer")
                accepted += 1
            return choices, accepted

        with self.console.status(_("simulated reviewers voting on {n} battles").format(n=battles)):
            choices, accepted = self.store._run(run())
        table = Table(_("vote"), _("battles"), title=_("Simulated reviewers' votes ({n} battles, {names})").format(
            n=battles, names=" vs ".join(self.round1)))
        for choice in ("a", "b", "tie", "both_bad"):
            table.add_row(_(CHOICE_WORDS[choice]), str(choices[choice]))
        self.console.print(table)
        self.console.print(_("{n} corrections written on both-bad battles (the gold answer), accepted by the admin "
                             "(`arena corrections accept`)").format(n=accepted))
        view = self.store._run(board_view(store, "human"))
        self.summary["arena"] = {"simulated": True, "battles": battles, "votes": dict(choices), "corrections_accepted": accepted,
                                 "human_board": [{k: row[k] for k in ("model", "rating", "votes")} for row in view.rows]}

    def add_corrections(self, kept: list) -> list:
        """The accepted corrections not yet in a dataset, as records to add to round 2 (and
        written, with who wrote them, to `report/added.jsonl`)."""
        from service.corrections import added_row, correction_records, list_corrections

        accepted = [c for c in self.store._run(list_corrections(self.store.store, "accepted")) if not c.used_in]
        records, self.used_corrections = correction_records(accepted, kept)
        #: Accepted corrections the curated set already holds verbatim (not added twice).
        self.corrections_present = len(accepted) - len(records)
        with (self.out / "report" / "added.jsonl").open("w") as f:
            for rec, c in zip(records, self.used_corrections):
                f.write(json.dumps(added_row(rec, c), ensure_ascii=False) + "\n")
        return records

    def corrections_used(self, dataset_ref: str) -> None:
        from service.corrections import mark_used

        if self.used_corrections:
            self.store._run(mark_used(self.store.store, [c.id for c in self.used_corrections], dataset_ref))

    def dpo_step(self) -> None:
        """Step 8: a DPO candidate from the simulated reviewers' votes (and the accepted
        corrections), on top of round 2's SFT candidate; benchmarked and gated like the others."""
        from service.dpo_runs import arena_source, start_dpo_run

        _ = self._
        self.step(8, _("DPO from the arena's votes: {name} from {parent}").format(name="r2-dpo", parent="r2-curated"))
        job = self.enqueue(start_dpo_run, base="tiny", parent="r2-curated", name="r2-dpo", source=arena_source("human"),
                           config=DPO_CONFIG)
        result = self.follow(job, _("train {name}").format(name="r2-dpo"))["result"]
        pairs, left_out = job.params["preferences"]["pairs"], job.params["preferences"]["left_out"]
        self.console.print(_("r2-dpo: {pairs} preference pairs from the simulated votes and corrections, {steps} steps, "
                             "reward margin {margin:+.3f}, reward accuracy {accuracy:.0%} (TRL's, last steps)").format(
            pairs=pairs, steps=result["steps"], margin=result["reward_margin"] or 0.0, accuracy=result["reward_accuracy"] or 0.0))
        self.evaluate(["r2-dpo"])
        # DPO on debug-split preferences is not expected to move the held-out facts: the
        # question is only whether it changed anything, either way.
        self.gate_dpo = self.gate_against("r2-curated", "r2-dpo", show=False)
        for split in ("debug", "test"):
            g = self.gate_dpo[split]
            self.console.print(_("r2-dpo vs r2-curated on the {split}: exact match {diff:+.3f} (fixed {fixed}, broke {broke} "
                                 "of {n}), exact McNemar p={p:.3g}: [bold]{change}[/]").format(
                split=_("held-out test split") if split == "test" else _("debug split (traced, curated on)"), diff=g["diff"],
                fixed=g["discordant"][1], broke=g["discordant"][0], n=g["n"], p=g["p_value"], change=_(CHANGE_WORDS[g["change"]])))
        self.summary["dpo"] = {"simulated_votes": True, "parent": "r2-curated", "pairs": pairs, "left_out": left_out,
                               "steps": result["steps"],
                               "reward_margin": result["reward_margin"], "reward_accuracy": result["reward_accuracy"],
                               "gate_vs_parent": self.gate_dpo}
