"""`arena demo`: the whole curation loop on a fresh machine, in one process.

1. build (or reuse) the tiny offline base;
2. generate a synthetic instruction dataset with planted defects (wrong answers on one
   topic, duplicates, contradictory pairs, a refusal flood) and a clean benchmark;
3. round 1: train two candidates (the full set, and an embedding coreset of it);
4. benchmark them, let the reference judge vote over the prompt pool, show the leaderboard;
5. trace the full-set candidate's failures to its training records and write the report;
6. curate round 2 from the report, retrain with the same seed, gate it against round 1,
   judge again, and print the final table;
7. unless `--no-serve`, serve the arena page.

Everything runs through the service's own jobs (train, eval, judge, trace) on an embedded
Redis with an in-process worker; every number printed is computed in this run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from evaluators.records import Conversation, Message, chat_row, render_plain
from service.config import Settings

DATASET = "facts"


def N_(message: str) -> str:
    """Marks a string for the catalog (`pybabel extract` knows `N_`); it is translated where shown."""
    return message

#: The benchmark has ~50–90 items: a margin of 0.05 could not be shown even for identical
#: candidates (the gate says so rather than guess); 0.1 is what this size can resolve.
GATE_MARGIN = 0.1
TASK = "facts-benchmark"


class DemoConfig(msgspec.Struct, frozen=True, kw_only=True):
    preset: str
    steps: int
    coreset_fraction: float
    judge_prompts: int


FULL = DemoConfig(preset="default", steps=1400, coreset_fraction=0.7, judge_prompts=100)
FAST = DemoConfig(preset="fast", steps=1000, coreset_fraction=0.7, judge_prompts=60)


def _train_config(steps: int) -> dict[str, Any]:
    """The synthetic dataset's recipe (`evaluators.synthetic.training_recipe`): all-linear LoRA,
    a fixed number of steps so a curated (smaller) set trains as long as the original."""
    from evaluators.synthetic import training_recipe

    return training_recipe(0, steps=steps)


#: The regression gate's verdicts as the demo prints them (translated where shown).
GATE_WORDS = (N_("PASS"), N_("REGRESSION"), N_("ERROR"))
#: What each planted defect is called in the tables, per kind of ground truth.
PLANTED_LABELS = {"wrong": N_("planted wrong answer"), "duplicate": N_("duplicate"),
                  "near_duplicate": N_("one-character near-duplicate"), "contradiction": N_("contradictory pair"),
                  "refusal": N_("refusal")}


class Demo:
    def __init__(self, out: Path, *, fast: bool, serve: bool, port: int, console: Console | None = None,
                 lang: str = "en") -> None:
        from service.i18n import translations

        if lang not in ("en", "zh"):
            raise ValueError(f"demo language {lang!r}: expected 'en' or 'zh'")
        self.lang = lang
        #: The demo's words in its language (the pages' gettext catalog; English is the source).
        self._ = translations("zh_CN" if lang == "zh" else "en").gettext
        self.out = out.resolve()
        self.fast = fast
        self.serve = serve
        self.port = port
        self.config = FAST if fast else FULL
        self.console = console or Console()
        self.settings = Settings(data_dir=self.out / "data", redis_url=None, key_prefix="arena", admin_token=None,
                                 locale="zh_CN" if lang == "zh" else "en")
        self.summary: dict[str, Any] = {"fast": fast, "lang": lang, "steps": {}}
        self.t0 = time.perf_counter()

    # --- plumbing ------------------------------------------------------------------------

    def step(self, n: int, title: str) -> None:
        self.console.rule(f"[bold]{n}. {title}[/]  [dim]{time.perf_counter() - self.t0:.0f} s[/]")

    def enqueue(self, fn, **kwargs):
        from service.cli.common import call_with_queue

        return call_with_queue(self.store, self.settings, fn, **kwargs)

    def follow(self, job, label: str) -> dict[str, Any]:
        from service.cli.common import follow_job

        return follow_job(self.store, job.id, label)

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from service.cli.train import _local_worker
        from service.runtime import redis_url
        from service.store import SyncStore

        self.out.mkdir(parents=True, exist_ok=True)
        import logging

        logging.getLogger("saq").setLevel(logging.ERROR)  # its shutdown notice is not ours to show
        with redis_url(self.settings) as url:
            self.store = SyncStore(url, self.settings.key_prefix)
            try:
                with _local_worker(self.store, self.settings):
                    self.build_base()
                    self.make_data()
                    self.round_one()
                    self.benchmark_and_judge()
                    self.trace()
                    self.round_two()
                self.finish()
                if self.serve:
                    self.serve_arena(url)
            finally:
                self.store.close()
        return self.summary

    def build_base(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from service.bases import make_base
        from service.models.tiny import BUILDER_VERSION, build_tiny_base

        _ = self._
        self.step(1, _("Tiny offline base") + (_(" (bilingual: English and Chinese)") if self.lang == "zh" else ""))
        suffix = "-zh" if self.lang == "zh" else ""
        cache = Path.home() / ".cache" / "adapter-arena" / f"tiny-small{suffix}-v{BUILDER_VERSION}"
        with Progress(TextColumn(_("pretraining the tiny base")), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), console=self.console) as bar:
            task = bar.add_task("base", total=None, loss=_("(cached)"))
            path = build_tiny_base(cache, size="small", seed=0, lang=self.lang,
                                   progress=lambda s, t, loss: bar.update(task, completed=s, total=t, loss=f"loss {loss:.3f}"))
        self.store.put_base(make_base("tiny", path, "tiny"))
        self.console.print(_("base [bold]tiny[/] at {path}").format(path=path))

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
        data_file = inputs / "facts.json"
        data_file.write_text(json.dumps([render_plain(r) for r in ds.records], ensure_ascii=False, indent=0))
        self.dsv, _warnings = self.store._run(datasets.add_dataset(self.store.store, self.settings.data_dir, data_file.read_bytes(),
                                                                   name=DATASET, filename=data_file.name))
        bench = [Conversation(messages=(*prompt.messages, Message("assistant", gold))) for prompt, gold in ds.benchmark]
        task, docs = task_from_records(TASK, bench)
        docs_file = inputs / "benchmark.jsonl"
        docs_file.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
        task_doc = msgspec.to_builtins(task)
        task_doc["dataset"] = str(docs_file)
        import yaml

        self.task_file = inputs / "benchmark.yaml"
        self.task_file.write_text(yaml.safe_dump(task_doc, sort_keys=False, allow_unicode=True))
        from service.evals import load_task_file

        self.task = load_task_file(self.task_file)
        self.store.add_prompts([{"text": p.prompt, "reference": gold, "category": topic, "source": "benchmark"}
                                for (p, gold), topic in zip(ds.benchmark, ds.benchmark_topics)])
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
        self.console.print(table)
        self.summary["dataset"] = {"records": len(ds.records), "benchmark": len(ds.benchmark), "planted_wrong": len(ds.planted_wrong)}
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

    def round_one(self) -> None:
        from evaluators.curation import select_coreset
        from evaluators.embeddings import embed
        from service import datasets, runs

        _ = self._
        self.step(3, _("Round 1: train the full set and an embedding coreset"))
        texts = [render_plain(r) for r in self.ds.records]
        budget = int(len(texts) * self.config.coreset_fraction)
        keep = select_coreset(embed(texts), budget, seed=0)
        core_file = self.out / "inputs" / "facts-coreset.jsonl"
        core_file.write_text("".join(json.dumps(chat_row(self.ds.records[i]), ensure_ascii=False) + "\n" for i in keep))
        core, _warnings = self.store._run(datasets.add_dataset(self.store.store, self.settings.data_dir, core_file.read_bytes(),
                                                               name="facts-coreset", filename=core_file.name,
                                                               parent=f"{DATASET}@1", note=f"k-means coreset, {budget} records"))
        self.console.print(_("coreset: {budget} of {n} records by k-means over sentence embeddings -> {ref}").format(
            budget=budget, n=len(texts), ref=core.ref))
        self.train_config = _train_config(self.config.steps)
        jobs = [
            self.enqueue(runs.start_run, base="tiny", data=f"{DATASET}@1", name="r1-full", config=self.train_config),
            self.enqueue(runs.start_run, base="tiny", data=core.ref, name="r1-coreset",
                         config=self.train_config),
        ]
        for job in jobs:
            result = self.follow(job, _("train {name}").format(name=job.params["candidate"]))["result"]
            self.console.print(_("{name}: final loss {loss:.4f}, {steps} steps, {tps:.0f} tokens/s").format(
                name=result["candidate"], loss=result["final_loss"], steps=result["steps"], tps=result["tokens_per_s"]))
        self.round1 = ["r1-full", "r1-coreset"]

    def evaluate(self, names: list[str]) -> dict[str, dict[str, Any]]:
        from service.evals import start_eval

        job = self.enqueue(start_eval, task=self.task, candidates=names)
        self.follow(job, self._("benchmark {names}").format(names=", ".join(names)))
        record = self.store.get_eval(job.id)
        out = {}
        for name in names:
            results = json.loads(Path(record.candidate(name).results_path).read_text())["results"][TASK]
            out[name] = {"eval": job.id, "exact_match": results["exact_match,none"], "stderr": results["exact_match_stderr,none"],
                         "dir": str(Path(record.candidate(name).results_path).parent)}
        return out

    def judge(self, names: list[str]) -> None:
        from service.judging import parse_judge_spec, start_judging

        _ = self._
        job = self.enqueue(start_judging, judge=parse_judge_spec("reference:exact_match", allow_both_bad=True),
                           candidates=names, prompts={"kind": "pool"}, n=self.config.judge_prompts)
        result = self.follow(job, _("reference judge over {n} prompts").format(n=self.config.judge_prompts))["result"]
        self.console.print(_("judge {judge}: {observations} observations (each pair in both orders), "
                             "{inconsistent} inconsistent pairs, {errors} errors").format(**result))

    def board(self) -> list[dict[str, Any]]:
        from service.leaderboards import board_view

        _ = self._
        view = self.store._run(board_view(self.store.store, "judge"))
        table = Table(_("rank UB"), _("model"), _("rating"), _("95% CI"), _("votes"), _("win rate"),
                      title=_("Judge leaderboard (Bradley–Terry)"))
        for row in view.rows:
            table.add_row(str(row["rank_ub"]), row["model"], f"{row['rating']:.0f}",
                          f"+{row['ci_high'] - row['rating']:.0f}/-{row['rating'] - row['ci_low']:.0f}", str(row["votes"]),
                          f"{row['win_rate']:.0%}")
        self.console.print(table)
        return view.rows

    def benchmark_and_judge(self) -> None:
        _ = self._
        self.step(4, _("Benchmark and LLM-judge pass (reference judge), leaderboard"))
        self.scores = self.evaluate(self.round1)
        for name, s in self.scores.items():
            self.console.print(_("{name}: exact match {em:.3f} ± {se:.3f}").format(name=name, em=s["exact_match"], se=s["stderr"]))
        self.judge(self.round1)
        self.summary["round1_board"] = self.board()

    def trace(self) -> None:
        from service import traces

        _ = self._
        self.step(5, _("Trace {name}'s failures to its training records").format(name="r1-full"))
        job = self.enqueue(traces.start_trace, candidate="r1-full", evals=[self.scores["r1-full"]["eval"]], battles=False, top=50)
        self.follow(job, _("trace {name}").format(name="r1-full"))
        self.report_id = job.id
        report = traces.load_report(self.settings, job.id)
        self.report = report
        out = self.out / "report"
        out.mkdir(exist_ok=True)
        for name in ("report.json", "report.html", "report.md"):
            (out / name).write_bytes((traces.report_dir(self.settings, job.id) / name).read_bytes())
        table = Table(_("rank"), _("record"), _("score"), _("prompt -> answer"), _("planted defect"),
                      title=_("Top offending records ({n} failures traced)").format(n=report["n_failures"]))
        for e in report["examples"][:12]:
            label = self.planted.get(e["index"], "-")
            table.add_row(str(e["rank"]), str(e["index"]), f"{e['score']:+.3f}", f"{e['prompt'][:40]} -> {e['answer'][:24]}",
                          f"[red]{label}[/]" if label != "-" else label)
        self.console.print(table)
        from evaluators.attribution import auroc, precision_at_k

        scores = [0.0] * len(self.ds.records)
        for e in report["examples"]:
            scores[e["index"]] = e["score"]
        planted = self.ds.planted_wrong
        self.summary["attribution"] = {"auroc": auroc(scores, planted), "precision_at_planted": precision_at_k(scores, planted)}
        self.console.print(_("planted wrong answers: AUROC {auroc:.3f}, precision@{k} {precision:.2f} "
                             "(ground truth from the generator, used only for this line)").format(
            auroc=self.summary["attribution"]["auroc"], k=len(planted), precision=self.summary["attribution"]["precision_at_planted"]))
        self.console.print(_("report: {path}").format(path=out / "report.html"))
    def round_two(self) -> None:
        from evaluators.regression import compare, exit_code, load_lm_eval_results
        from service import datasets, runs, traces

        _ = self._
        self.step(6, _("Round 2: curate from the report, retrain, gate against round 1"))
        # Drop what the report flags (records contradicting a failing item's gold answer, and the
        # dataset checks' duplicates / garbled / overlapping records), plus as many of the
        # top-scored records again, so records blamed by the gradient score alone go too.
        flagged = sum(1 for e in self.report["examples"] if e["reference_conflict"])
        result = traces.curate_from_report(self.settings, self.report, drop_top=flagged or None, drop_flagged=True, budget=None)
        next_file = self.out / "inputs" / "facts-round2.jsonl"
        next_file.write_text("".join(json.dumps(chat_row(r), ensure_ascii=False) + "\n"
                                     for r in result.kept))
        removed_file = self.out / "report" / "removed.jsonl"
        removed_file.write_text("".join(json.dumps({"index": r.index, "reason": r.reason, "planted": self.planted.get(r.index)},
                                                   ensure_ascii=False) + "\n" for r in result.removed))
        v2, _warnings = self.store._run(datasets.add_dataset(self.store.store, self.settings.data_dir, next_file.read_bytes(),
                                                             name=DATASET, filename=next_file.name, parent=f"{DATASET}@1",
                                                             note=f"curated from {self.report_id}"))
        hit = sum(1 for r in result.removed if r.index in set(self.ds.planted_wrong))
        self.console.print(_("removed {removed} records ({hit} of {planted} planted wrong answers among them), "
                             "kept {kept} -> {ref}; reasons in {path}").format(
            removed=len(result.removed), hit=hit, planted=len(self.ds.planted_wrong), kept=len(result.kept), ref=v2.ref,
            path=removed_file))
        job = self.enqueue(runs.start_run, base="tiny", data=v2.ref, name="r2-curated", config=self.train_config)
        self.follow(job, _("train {name}").format(name="r2-curated"))
        self.scores.update(self.evaluate(["r2-curated"]))
        base_scores = load_lm_eval_results(self.scores["r1-full"]["dir"])
        new_scores = load_lm_eval_results(self.scores["r2-curated"]["dir"])
        verdicts = compare(base_scores, new_scores, default_margin=GATE_MARGIN, metrics={TASK: "exact_match"}, tasks=[TASK])
        v = verdicts[0]
        self.gate = {"status": v.status, "diff": v.diff, "ci": [v.ci_low, v.ci_high], "exit_code": exit_code(verdicts), "reason": v.reason}
        self.console.print(_("regression gate r2-curated vs r1-full (exact match, non-inferiority margin {margin} on "
                             "{n} paired items): [bold]{status}[/] diff {diff:+.3f} CI [{low:+.3f}, {high:+.3f}]").format(
            margin=GATE_MARGIN, n=v.n_paired, status=_(v.status.upper()), diff=v.diff, low=v.ci_low, high=v.ci_high))
        self.judge(["r1-full", "r1-coreset", "r2-curated"])
        self.summary["final_board"] = self.board()

    def finish(self) -> None:
        _ = self._
        self.step(7, _("Summary"))
        board = {r["model"]: r for r in self.summary["final_board"]}
        table = Table(_("candidate"), _("data"), _("exact match"), _("judge rating (95% CI)"), _("gate vs r1-full"),
                      title=_("Round 2 vs round 1"))
        data = {"r1-full": f"{DATASET}@1", "r1-coreset": "facts-coreset@1", "r2-curated": f"{DATASET}@2 " + _("(curated)")}
        for name in ("r1-full", "r1-coreset", "r2-curated"):
            s, b = self.scores[name], board.get(name, {})
            rating = f"{b['rating']:.0f} ({b['ci_low']:.0f}–{b['ci_high']:.0f})" if b else "-"
            gate = _(self.gate["status"].upper()) if name == "r2-curated" else (_("baseline") if name == "r1-full" else "-")
            table.add_row(name, data[name], f"{s['exact_match']:.3f} ± {s['stderr']:.3f}", rating, gate)
        self.console.print(table)
        improved = self.scores["r2-curated"]["exact_match"] > self.scores["r1-full"]["exact_match"]
        top = self.summary["final_board"][0]["model"] if self.summary["final_board"] else None
        self.summary.update(
            scores={k: {"exact_match": v["exact_match"], "stderr": v["stderr"], "eval": v["eval"]} for k, v in self.scores.items()},
            gate=self.gate, report_id=self.report_id, report_dir=str(self.out / "report"),
            improved_on_benchmark=improved, leaderboard_top=top, wall_s=round(time.perf_counter() - self.t0, 1),
        )
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=1, default=str, ensure_ascii=False))
        verdict = _("r2-curated beats r1-full on the benchmark") if improved else _("r2-curated does NOT beat r1-full on the benchmark")
        self.console.print(_("{verdict} ({new:.3f} vs {old:.3f}); leaderboard top: {top}; {wall:.0f} s in all. Summary: {path}").format(
            verdict=verdict, new=self.scores["r2-curated"]["exact_match"], old=self.scores["r1-full"]["exact_match"], top=top,
            wall=self.summary["wall_s"], path=self.out / "summary.json"))

    def serve_arena(self, url: str) -> None:
        import uvicorn

        from service.app import create_app
        from service.battles import set_active

        self.store._run(set_active(self.store.store, self.settings, ["r1-full", "r1-coreset", "r2-curated"], True))
        app = create_app(self.settings, url, worker=True)
        base = f"http://127.0.0.1:{self.port}"
        _ = self._
        self.console.rule("[bold]" + _("Arena") + "[/]")
        self.console.print(_("vote at [bold]{base}/arena[/]  ·  leaderboard {base}/leaderboard  ·  report {base}/reports/{report}").format(
            base=base, report=self.report_id))
        self.console.print(_("admin token: {token} (in {path}); Ctrl-C to stop").format(
            token=app.state.admin_token, path=self.settings.data_dir / "admin_token"))
        uvicorn.run(app, host="127.0.0.1", port=self.port, log_level="warning", proxy_headers=False)
