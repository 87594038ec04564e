"""The demo's data steps: the synthetic set with its planted defects, the benchmark split
into a debug and a held-out test split, and what the dataset checks find (`service.demo`)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from rich.table import Table

from evaluators.records import Conversation, Message, chat_row

DATASET = "facts"


def N_(message: str) -> str:
    """Marks a string for the catalog (`pybabel extract` knows `N_`); it is translated where shown."""
    return message


#: The benchmark, split in two: the debug split's failures are traced and drive curation;
#: the test split is never traced, never in the judge's prompt pool, never curated on —
#: round 2's gain there is the one the demo may claim.
SPLITS = (N_("debug"), N_("test"))
TASKS = {"debug": "facts-debug", "test": "facts-test"}
#: What each planted defect is called in the tables, per kind of ground truth.
PLANTED_LABELS = {"wrong": N_("planted wrong answer"), "duplicate": N_("duplicate"),
                  "near_duplicate": N_("one-character near-duplicate"), "contradiction": N_("contradictory pair"),
                  "refusal": N_("refusal")}


class DemoData:
    """The data steps of `service.demo.Demo` (which supplies the store, console and config)."""

    _: Any
    summary: dict[str, Any]

    def make_data(self) -> None:
        from evaluators.synthetic import make_synthetic_dataset
        from evaluators.tasks import task_from_records
        from service import datasets

        _ = self._
        self.step(2, _("Synthetic dataset with planted defects, and a clean benchmark"))
        ds = make_synthetic_dataset(self.config.preset, seed=0, lang=self.lang)
        self.ds = ds
        inputs = self.out / "inputs"
        inputs.mkdir(exist_ok=True)
        data_file = inputs / "facts.jsonl"
        data_file.write_text("".join(json.dumps(chat_row(r), ensure_ascii=False) + "\n" for r in ds.records))
        self.dsv, _warnings = self.store._run(datasets.add_dataset(self.store.store, self.settings.data_dir, data_file.read_bytes(),
                                                                   name=DATASET, filename=data_file.name))
        # Split the benchmark: corrupted items alternate between the splits, and so do clean ones.
        corrupted = set(ds.corrupted_items)
        self.split_of: dict[int, str] = {}
        for group in (sorted(corrupted), [j for j in range(len(ds.benchmark)) if j not in corrupted]):
            for k, j in enumerate(group):
                self.split_of[j] = SPLITS[k % 2]
        import yaml

        from service.evals import load_task_file

        self.tasks = {}
        for split in SPLITS:
            items = [j for j in range(len(ds.benchmark)) if self.split_of[j] == split]
            bench = [Conversation(messages=(*ds.benchmark[j][0].messages, Message("assistant", ds.benchmark[j][1]))) for j in items]
            task, docs = task_from_records(TASKS[split], bench)
            docs_file = inputs / f"benchmark-{split}.jsonl"
            docs_file.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
            task_doc = msgspec.to_builtins(task)
            task_doc["dataset"] = str(docs_file)
            task_file = inputs / f"benchmark-{split}.yaml"
            task_file.write_text(yaml.safe_dump(task_doc, sort_keys=False, allow_unicode=True))
            self.tasks[split] = load_task_file(task_file)
        # The judge's pool: the debug split only (its verdicts feed the leaderboard, and nothing
        # of the test split may reach a curation decision).
        self.store.add_prompts([{"text": p.prompt, "reference": gold, "category": topic, "source": "benchmark-debug"}
                                for j, ((p, gold), topic) in enumerate(zip(ds.benchmark, ds.benchmark_topics))
                                if self.split_of[j] == "debug"])
        duplicate = "near_duplicate" if self.lang == "zh" else "duplicate"
        self.kinds = {i: "wrong" for i in ds.planted_wrong}
        self.kinds.update({i: duplicate for i in ds.duplicates})
        self.kinds.update({i: "contradiction" for pair in ds.contradictions for i in pair})
        self.kinds.update({i: "refusal" for i in ds.refusals})
        self.planted = {i: _(PLANTED_LABELS[kind]) for i, kind in self.kinds.items()}
        (inputs / "planted.json").write_text(json.dumps({
            "planted_wrong": ds.planted_wrong, "duplicates": ds.duplicates, "contradictions": ds.contradictions,
            "refusals": ds.refusals, "corrupted_topic": ds.corrupted_topic, "corrupted_benchmark_items": ds.corrupted_items,
        }, indent=1))
        table = Table(_("what"), _("records"), title=_("{ref}: {n} records ({preset} preset)").format(
            ref=f"{DATASET}@1", n=len(ds.records), preset=self.config.preset))
        table.add_row(_("wrong answers planted in topic '{topic}'").format(topic=ds.corrupted_topic), str(len(ds.planted_wrong)))
        table.add_row(_(PLANTED_LABELS[duplicate]), str(len(ds.duplicates)))
        table.add_row(_(PLANTED_LABELS["contradiction"]), str(len(ds.contradictions)))
        table.add_row(_("refusal flood"), str(len(ds.refusals)))
        table.add_row(_("benchmark items (clean gold answers)"), str(len(ds.benchmark)))
        table.add_row(_("… of which the held-out test split (never traced or curated on)"),
                      str(sum(1 for v in self.split_of.values() if v == "test")))
        bad = {r.metadata.get("source") for i, r in enumerate(ds.records) if i in set(ds.planted_wrong)}
        table.add_row(_("sources (metadata); the planted wrong answers come from"), ", ".join(sorted(bad)))
        self.console.print(table)
        self.summary["dataset"] = {"records": len(ds.records), "benchmark": len(ds.benchmark), "planted_wrong": len(ds.planted_wrong),
                                  "debug_items": sum(1 for v in self.split_of.values() if v == "debug"),
                                  "test_items": sum(1 for v in self.split_of.values() if v == "test")}
        self.data_checks()

    def data_checks(self) -> None:
        """What `arena data check` finds of each planted defect (a record counts as found when a
        finding of the defect's own check names it)."""
        from evaluators.datachecks import check_dataset

        _ = self._
        report = check_dataset(self.ds.records)
        by_check = {"duplicate": ("exact_duplicate", "near_duplicate"), "near_duplicate": ("near_duplicate", "exact_duplicate"),
                    "contradiction": ("conflicting_answers",), "refusal": ("refusal_rate",)}
        table = Table(_("planted defect"), _("planted records"), _("found by the checks"), _("check"),
                      title=_("Dataset checks (arena data check) on {ref}").format(ref=f"{DATASET}@1"))
        found_all: dict[str, list[int]] = {}
        for kind, checks in by_check.items():
            planted = {i for i, k in self.kinds.items() if k == kind}
            if not planted:
                continue
            named = {i for f in report.findings if f.check in checks for i in f.record_indices}
            found_all[kind] = [len(planted & named), len(planted)]
            table.add_row(_(PLANTED_LABELS[kind]), str(len(planted)), str(len(planted & named)), " / ".join(checks[:1]))
        self.console.print(table)
        self.summary["data_checks"] = found_all

