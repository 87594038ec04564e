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

from evaluators.records import Conversation, Message, render_plain
from service.config import Settings

DATASET = "facts"
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


class Demo:
    def __init__(self, out: Path, *, fast: bool, serve: bool, port: int, console: Console | None = None) -> None:
        self.out = out.resolve()
        self.fast = fast
        self.serve = serve
        self.port = port
        self.config = FAST if fast else FULL
        self.console = console or Console()
        self.settings = Settings(data_dir=self.out / "data", redis_url=None, key_prefix="arena", admin_token=None)
        self.summary: dict[str, Any] = {"fast": fast, "steps": {}}
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

        self.step(1, "Tiny offline base")
        cache = Path.home() / ".cache" / "adapter-arena" / f"tiny-small-v{BUILDER_VERSION}"
        with Progress(TextColumn("pretraining the tiny base"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), console=self.console) as bar:
            task = bar.add_task("base", total=None, loss="(cached)")
            path = build_tiny_base(cache, size="small", seed=0,
                                   progress=lambda s, t, loss: bar.update(task, completed=s, total=t, loss=f"loss {loss:.3f}"))
        self.store.put_base(make_base("tiny", path, "tiny"))
        self.console.print(f"base [bold]tiny[/] at {path}")

    def make_data(self) -> None:
        from evaluators.synthetic import make_synthetic_dataset
        from evaluators.tasks import task_from_records
        from service import datasets

        self.step(2, "Synthetic dataset with planted defects, and a clean benchmark")
        ds = make_synthetic_dataset(self.config.preset, seed=0)
        self.ds = ds
        inputs = self.out / "inputs"
        inputs.mkdir(exist_ok=True)
        data_file = inputs / "facts.json"
        data_file.write_text(json.dumps([render_plain(r) for r in ds.records], ensure_ascii=False, indent=0))
        self.dsv, _ = self.store._run(datasets.add_dataset(self.store.store, self.settings.data_dir, data_file.read_bytes(),
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
        self.planted = {i: "planted wrong answer" for i in ds.planted_wrong}
        self.planted.update({i: "duplicate" for i in ds.duplicates})
        self.planted.update({i: "contradictory pair" for pair in ds.contradictions for i in pair})
        self.planted.update({i: "refusal" for i in ds.refusals})
        (inputs / "planted.json").write_text(json.dumps({
            "planted_wrong": ds.planted_wrong, "duplicates": ds.duplicates, "contradictions": ds.contradictions,
            "refusals": ds.refusals, "corrupted_topic": ds.corrupted_topic, "corrupted_benchmark_items": ds.corrupted_items,
        }, indent=1))
        table = Table("what", "records", title=f"{DATASET}@1: {len(ds.records)} records ({self.config.preset} preset)")
        table.add_row(f"wrong answers planted in topic '{ds.corrupted_topic}'", str(len(ds.planted_wrong)))
        table.add_row("exact duplicates", str(len(ds.duplicates)))
        table.add_row("contradictory pairs", str(len(ds.contradictions)))
        table.add_row("refusal flood", str(len(ds.refusals)))
        table.add_row("benchmark items (clean gold answers)", str(len(ds.benchmark)))
        self.console.print(table)
        self.summary["dataset"] = {"records": len(ds.records), "benchmark": len(ds.benchmark), "planted_wrong": len(ds.planted_wrong)}

    def round_one(self) -> None:
        from evaluators.curation import select_coreset
        from evaluators.embeddings import embed
        from service import datasets, runs

        self.step(3, "Round 1: train the full set and an embedding coreset")
        texts = [render_plain(r) for r in self.ds.records]
        budget = int(len(texts) * self.config.coreset_fraction)
        keep = select_coreset(embed(texts), budget, seed=0)
        core_file = self.out / "inputs" / "facts-coreset.jsonl"
        core_file.write_text("".join(json.dumps({"messages": msgspec.to_builtins(self.ds.records[i].messages)}) + "\n" for i in keep))
        core, _ = self.store._run(datasets.add_dataset(self.store.store, self.settings.data_dir, core_file.read_bytes(),
                                                       name="facts-coreset", filename=core_file.name,
                                                       parent=f"{DATASET}@1", note=f"k-means coreset, {budget} records"))
        self.console.print(f"coreset: {budget} of {len(texts)} records by k-means over sentence embeddings -> {core.ref}")
        self.train_config = _train_config(self.config.steps)
        jobs = [
            self.enqueue(runs.start_run, base="tiny", data=f"{DATASET}@1", name="r1-full", config=self.train_config),
            self.enqueue(runs.start_run, base="tiny", data=core.ref, name="r1-coreset",
                         config=self.train_config),
        ]
        for job in jobs:
            result = self.follow(job, f"train {job.params['candidate']}")["result"]
            self.console.print(f"{result['candidate']}: final loss {result['final_loss']:.4f}, {result['steps']} steps, "
                               f"{result['tokens_per_s']:.0f} tokens/s")
        self.round1 = ["r1-full", "r1-coreset"]

    def evaluate(self, names: list[str]) -> dict[str, dict[str, Any]]:
        from service.evals import start_eval

        job = self.enqueue(start_eval, task=self.task, candidates=names)
        self.follow(job, f"benchmark {', '.join(names)}")
        record = self.store.get_eval(job.id)
        out = {}
        for name in names:
            results = json.loads(Path(record.candidate(name).results_path).read_text())["results"][TASK]
            out[name] = {"eval": job.id, "exact_match": results["exact_match,none"], "stderr": results["exact_match_stderr,none"],
                         "dir": str(Path(record.candidate(name).results_path).parent)}
        return out

    def judge(self, names: list[str]) -> None:
        from service.judging import parse_judge_spec, start_judging

        job = self.enqueue(start_judging, judge=parse_judge_spec("reference:exact_match", allow_both_bad=True),
                           candidates=names, prompts={"kind": "pool"}, n=self.config.judge_prompts)
        result = self.follow(job, f"reference judge over {self.config.judge_prompts} prompts")["result"]
        self.console.print(f"judge {result['judge']}: {result['observations']} observations (each pair in both orders), "
                           f"{result['inconsistent']} inconsistent pairs, {result['errors']} errors")

    def board(self) -> list[dict[str, Any]]:
        from service.leaderboards import board_view

        view = self.store._run(board_view(self.store.store, "judge"))
        table = Table("rank UB", "model", "rating", "95% CI", "votes", "win rate", title="Judge leaderboard (Bradley–Terry)")
        for row in view.rows:
            table.add_row(str(row["rank_ub"]), row["model"], f"{row['rating']:.0f}",
                          f"+{row['ci_high'] - row['rating']:.0f}/-{row['rating'] - row['ci_low']:.0f}", str(row["votes"]),
                          f"{row['win_rate']:.0%}")
        self.console.print(table)
        return view.rows

    def benchmark_and_judge(self) -> None:
        self.step(4, "Benchmark and LLM-judge pass (reference judge), leaderboard")
        self.scores = self.evaluate(self.round1)
        for name, s in self.scores.items():
            self.console.print(f"{name}: exact match {s['exact_match']:.3f} ± {s['stderr']:.3f}")
        self.judge(self.round1)
        self.summary["round1_board"] = self.board()

    def trace(self) -> None:
        from service import traces

        self.step(5, "Trace r1-full's failures to its training records")
        job = self.enqueue(traces.start_trace, candidate="r1-full", evals=[self.scores["r1-full"]["eval"]], battles=False, top=50)
        self.follow(job, "trace r1-full")
        self.report_id = job.id
        report = traces.load_report(self.settings, job.id)
        self.report = report
        out = self.out / "report"
        out.mkdir(exist_ok=True)
        for name in ("report.json", "report.html", "report.md"):
            (out / name).write_bytes((traces.report_dir(self.settings, job.id) / name).read_bytes())
        table = Table("rank", "record", "score", "prompt -> answer", "planted defect", title=f"Top offending records ({report['n_failures']} failures traced)")
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
        self.console.print(f"planted wrong answers: AUROC {self.summary['attribution']['auroc']:.3f}, "
                           f"precision@{len(planted)} {self.summary['attribution']['precision_at_planted']:.2f} "
                           f"(ground truth from the generator, used only for this line)")
        self.console.print(f"report: {out / 'report.html'}")

    def round_two(self) -> None:
        from evaluators.regression import compare, exit_code, load_lm_eval_results
        from service import datasets, runs, traces

        self.step(6, "Round 2: curate from the report, retrain, gate against round 1")
        # Drop what the report flags (records contradicting a failing item's gold answer, and the
        # dataset checks' duplicates / garbled / overlapping records), plus as many of the
        # top-scored records again, so records blamed by the gradient score alone go too.
        flagged = sum(1 for e in self.report["examples"] if e["reference_conflict"])
        result = traces.curate_from_report(self.settings, self.report, drop_top=flagged or None, drop_flagged=True, budget=None)
        next_file = self.out / "inputs" / "facts-round2.jsonl"
        next_file.write_text("".join(json.dumps({"messages": msgspec.to_builtins(r.messages)}) + "\n" for r in result.kept))
        removed_file = self.out / "report" / "removed.jsonl"
        removed_file.write_text("".join(json.dumps({"index": r.index, "reason": r.reason, "planted": self.planted.get(r.index)}) + "\n"
                                        for r in result.removed))
        v2, _ = self.store._run(datasets.add_dataset(self.store.store, self.settings.data_dir, next_file.read_bytes(), name=DATASET,
                                                     filename=next_file.name, parent=f"{DATASET}@1", note=f"curated from {self.report_id}"))
        hit = sum(1 for r in result.removed if r.index in set(self.ds.planted_wrong))
        self.console.print(f"removed {len(result.removed)} records ({hit} of {len(self.ds.planted_wrong)} planted wrong answers among them), "
                           f"kept {len(result.kept)} -> {v2.ref}; reasons in {removed_file}")
        job = self.enqueue(runs.start_run, base="tiny", data=v2.ref, name="r2-curated", config=self.train_config)
        self.follow(job, "train r2-curated")
        self.scores.update(self.evaluate(["r2-curated"]))
        base_scores = load_lm_eval_results(self.scores["r1-full"]["dir"])
        new_scores = load_lm_eval_results(self.scores["r2-curated"]["dir"])
        verdicts = compare(base_scores, new_scores, default_margin=GATE_MARGIN, metrics={TASK: "exact_match"}, tasks=[TASK])
        v = verdicts[0]
        self.gate = {"status": v.status, "diff": v.diff, "ci": [v.ci_low, v.ci_high], "exit_code": exit_code(verdicts), "reason": v.reason}
        self.console.print(f"regression gate r2-curated vs r1-full (exact match, non-inferiority margin {GATE_MARGIN} on "
                           f"{v.n_paired} paired items): [bold]{v.status.upper()}[/] "
                           f"diff {v.diff:+.3f} CI [{v.ci_low:+.3f}, {v.ci_high:+.3f}]")
        self.judge(["r1-full", "r1-coreset", "r2-curated"])
        self.summary["final_board"] = self.board()

    def finish(self) -> None:
        self.step(7, "Summary")
        board = {r["model"]: r for r in self.summary["final_board"]}
        table = Table("candidate", "data", "exact match", "judge rating (95% CI)", "gate vs r1-full", title="Round 2 vs round 1")
        data = {"r1-full": f"{DATASET}@1", "r1-coreset": "facts-coreset@1", "r2-curated": f"{DATASET}@2 (curated)"}
        for name in ("r1-full", "r1-coreset", "r2-curated"):
            s, b = self.scores[name], board.get(name, {})
            rating = f"{b['rating']:.0f} ({b['ci_low']:.0f}–{b['ci_high']:.0f})" if b else "-"
            gate = self.gate["status"].upper() if name == "r2-curated" else ("baseline" if name == "r1-full" else "-")
            table.add_row(name, data[name], f"{s['exact_match']:.3f} ± {s['stderr']:.3f}", rating, gate)
        self.console.print(table)
        improved = self.scores["r2-curated"]["exact_match"] > self.scores["r1-full"]["exact_match"]
        top = self.summary["final_board"][0]["model"] if self.summary["final_board"] else None
        self.summary.update(
            scores={k: {"exact_match": v["exact_match"], "stderr": v["stderr"], "eval": v["eval"]} for k, v in self.scores.items()},
            gate=self.gate, report_id=self.report_id, report_dir=str(self.out / "report"),
            improved_on_benchmark=improved, leaderboard_top=top, wall_s=round(time.perf_counter() - self.t0, 1),
        )
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=1, default=str))
        verdict = "beats" if improved else "does NOT beat"
        self.console.print(f"r2-curated {verdict} r1-full on the benchmark "
                           f"({self.scores['r2-curated']['exact_match']:.3f} vs {self.scores['r1-full']['exact_match']:.3f}); "
                           f"leaderboard top: {top}; {self.summary['wall_s']:.0f} s in all. Summary: {self.out / 'summary.json'}")

    def serve_arena(self, url: str) -> None:
        import uvicorn

        from service.app import create_app
        from service.battles import set_active

        self.store._run(set_active(self.store.store, self.settings, ["r1-full", "r1-coreset", "r2-curated"], True))
        app = create_app(self.settings, url, worker=True)
        base = f"http://127.0.0.1:{self.port}"
        self.console.rule("[bold]Arena[/]")
        self.console.print(f"vote at [bold]{base}/arena[/]  ·  leaderboard {base}/leaderboard  ·  report {base}/reports/{self.report_id}")
        self.console.print(f"admin token: {app.state.admin_token} (in {self.settings.data_dir / 'admin_token'}); Ctrl-C to stop")
        uvicorn.run(app, host="127.0.0.1", port=self.port, log_level="warning", proxy_headers=False)
