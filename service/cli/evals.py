"""`arena eval`, `arena check` (the regression gate) and `arena evals list|show`
(`arena task` is `service.cli.tasks`).

`eval` and `check` run their evals as jobs. When no worker is live on the Redis they
use (always so in embedded mode), a worker runs in this process, as `arena train
--wait` does, so one command works on a fresh machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from service.cli.common import ListingGroup, call_with_queue, echo_json, follow_job, open_store, settings
from service.errors import ArenaError, InvalidInput


class _Limit(click.ParamType):
    """lm-eval's --limit: a count (`50`) or a fraction (`0.1`)."""

    name = "N"

    def convert(self, value: Any, param, ctx) -> int | float:
        if isinstance(value, (int, float)):
            return value
        try:
            return int(value)
        except ValueError:
            pass
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r}: expected a count or a fraction in (0, 1)", param, ctx)


LIMIT = _Limit()


def _names(value: str) -> list[str]:
    return [n.strip() for n in value.split(",") if n.strip()]


def _task_file(path: str, **chat_flags):
    """The task file, with lm-eval's chat flags (`--apply-chat-template` …) over its fields."""
    from service.evals import chat_overrides, load_task_file

    if not Path(path).is_file():
        raise InvalidInput(f"{path}: no such task file")
    return load_task_file(path, chat_overrides(**chat_flags))


def _worker_here(store, s):
    """A worker in this process unless one is live on this Redis (see `_local_worker`)."""
    from service.cli.train import _local_worker

    return _local_worker(store, s)


def _start(store, s, **kw):
    from service.evals import start_eval

    return call_with_queue(store, s, start_eval, **kw)


def _fmt(score: dict | Any) -> str:
    value, stderr = score.value, score.stderr
    if value is None:
        return "n/a"
    return f"{value:.4f}" + (f" ± {stderr:.4f}" if stderr is not None else "")


def _print_eval(record) -> None:
    metrics = list(dict.fromkeys(m for c in record.candidates for m in c.metrics))
    click.echo(f"{record.id}: task {record.task} on {record.dataset}, {record.n_docs}/{record.n_original} docs, "
               f"{len(record.candidates)} candidate(s), {record.samples_per_s:.1f} samples/s")
    rows = [["candidate", *metrics]]
    rows += [[c.name, *(_fmt(c.metrics[m]) if m in c.metrics else "" for m in metrics)] for c in record.candidates]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join([row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]))
    for c in record.candidates:
        click.echo(f"{c.name}: {c.results_path}")
    click.echo(f"page: /evals/{record.id}")


# --- arena eval ----------------------------------------------------------------------------------


def _chat_options(fn):
    """lm-eval's chat flags, on every command that runs a task."""
    fn = click.option("--fewshot-as-multiturn", is_flag=True, default=None,
                      help="Few-shot examples as user/assistant exchanges (needs --apply-chat-template).")(fn)
    fn = click.option("--system-instruction", default=None, help="A system turn for every prompt (lm-eval's flag).")(fn)
    return click.option("--apply-chat-template", is_flag=True, default=None,
                        help="doc_to_text is the user turn, rendered with each candidate's chat template "
                             "(lm-eval's flag).")(fn)


@click.command("eval")
@click.option("--candidate", "candidates", required=True, help="Candidate name, or several: C[,D,...] (they share batches).")
@click.option("--task", "task_file", required=True, help="Task YAML file (lm-eval style).")
@click.option("--limit", type=LIMIT, default=None, help="Evaluate the first N documents (or a fraction in (0, 1)).")
@_chat_options
@click.option("--no-wait", is_flag=True, help="Enqueue and return the eval id.")
@click.option("--json", "json_out", is_flag=True, help="Print the eval record as JSON.")
def eval_cmd(candidates: str, task_file: str, limit, apply_chat_template, system_instruction, fewshot_as_multiturn,
             no_wait: bool, json_out: bool) -> None:
    """Run a benchmark task on one or more candidates, as a job with a progress bar."""
    task = _task_file(task_file, apply_chat_template=apply_chat_template, system_instruction=system_instruction,
                      fewshot_as_multiturn=fewshot_as_multiturn)
    s = settings()
    with open_store(s) as store:
        job = _start(store, s, task=task, candidates=_names(candidates), limit=limit)
        if no_wait:
            echo_json(job) if json_out else click.echo(f"queued {job.id}")
            return
        with _worker_here(store, s):
            follow_job(store, job.id, f"eval {task.task}", json_out)
        record = store.get_eval(job.id)
    echo_json(record) if json_out else _print_eval(record)


@click.group("evals", cls=ListingGroup)
def evals_cmd() -> None:
    """List and show finished evals."""


@evals_cmd.command("list")
@click.option("--candidate", default=None, help="Only evals that scored this candidate.")
@click.option("--json", "json_out", is_flag=True)
def evals_list(candidate: str | None, json_out: bool) -> None:
    """Evals, newest first, with each candidate's primary score."""
    with open_store() as store:
        if candidate:
            store.get_candidate(candidate)
        rows = store.list_candidate_evals(candidate) if candidate else store.list_evals()
    if json_out:
        echo_json(rows)
        return
    if not rows:
        click.echo("no evals yet: `arena eval --candidate C --task FILE`")
    for r in rows:
        scores = ", ".join(f"{c.name} {_fmt(c.metrics[r.primary_metric])}" for c in r.candidates)
        click.echo(f"{r.id}  {r.task:<16} {r.primary_metric}: {scores}  ({r.n_docs} docs)")


@evals_cmd.command("show")
@click.argument("eval_id")
@click.option("--json", "json_out", is_flag=True)
def evals_show(eval_id: str, json_out: bool) -> None:
    """One eval's scores, lineage and files."""
    with open_store() as store:
        record = store.get_eval(eval_id)
    echo_json(record) if json_out else _print_eval(record)


# --- arena check ---------------------------------------------------------------------------------


class CannotRun(Exception):
    """The gate could not run; exit 2 with this one-line reason."""


def _scores_of(record, name: str, task: str):
    from evaluators.gate_scores import load_lm_eval_results

    folder = Path(record.candidate(name).results_path).parent
    try:
        return load_lm_eval_results(folder)[task]
    except (ValueError, KeyError) as exc:
        raise CannotRun(f"eval {record.id} of {name}: cannot read its samples in {folder}: {exc}") from None


def _gather_scores(store, s, tasks, names: list[str], limit, rerun: bool, quiet: bool) -> dict[str, dict[str, Any]]:
    """{candidate: {task: TaskScores}}, from cached evals where the same weights already
    ran the same task (same documents, config and limit), else from new eval jobs."""
    from service.evals import check_candidates, eval_cache_key, prepare_task

    candidates = store._run(check_candidates(store.store, names))
    scores: dict[str, dict[str, Any]] = {n: {} for n in names}
    pending = []
    for task in tasks:
        prepared = store._run(prepare_task(store.store, s, task))
        missing = []
        for c in candidates:
            record = None if rerun else store.cached_eval(eval_cache_key(s, c, prepared.task_hash, limit))
            if record is None:
                missing.append(c.name)
            else:
                scores[c.name][task.task] = _scores_of(record, c.name, task.task)
                click.echo(f"{task.task}: {c.name} from cached eval {record.id}", err=True)
        if missing:
            job = _start(store, s, task=task, candidates=missing, limit=limit, prepared=prepared)
            pending.append((task, missing, job))
    if pending:
        with _worker_here(store, s):
            for task, missing, job in pending:
                try:
                    follow_job(store, job.id, f"eval {task.task}: {', '.join(missing)}", quiet)
                except ArenaError as exc:
                    raise CannotRun(str(exc)) from None
                record = store.get_eval(job.id)
                for name in missing:
                    scores[name][task.task] = _scores_of(record, name, task.task)
    return scores


def _print_verdicts(verdicts, baseline: str, candidate: str, margin: float) -> None:
    def num(x, fmt="{:.4f}"):
        return "n/a" if x is None else fmt.format(x)

    click.echo(f"baseline {baseline} vs candidate {candidate} (non-inferiority margin {margin:g})")
    header = f"{'task':<16} {'metric':<12} {'baseline':>9} {'candidate':>9} {'diff':>8} {'CI':>20} {'p (Holm)':>9} {'n':>5}  verdict"
    click.echo(header)
    for v in verdicts:
        ci = "" if v.ci_low is None else f"[{v.ci_low:+.4f}, {v.ci_high:+.4f}]"
        click.echo(f"{v.task:<16} {v.metric:<12} {num(v.baseline):>9} {num(v.candidate):>9} {num(v.diff, '{:+.4f}'):>8} "
                   f"{ci:>20} {num(v.p_adjusted, '{:.3g}'):>9} {v.n_paired:>5}  {v.status.upper()}")
    for v in verdicts:
        if v.status != "pass":
            click.echo(f"  {v.task}: {v.reason}")


def _same_prompts(task, scores) -> None:
    """`CannotRun` when lm-eval asked the baseline other prompts than the candidate will be
    asked: its chat options are run flags, and a run without `--apply_chat_template` on a
    chat task scores a chat-trained baseline near zero, so any candidate "passes"."""
    from evaluators.task_export import lm_eval_flags

    asked = scores.asked if scores is not None else None
    if asked is None:
        return
    wanted = {"apply_chat_template": task.apply_chat_template,
              "system_instruction": task.system_instruction if task.apply_chat_template else asked["system_instruction"]}
    differ = [k for k in wanted if wanted[k] != asked[k]]
    if differ:
        said = ", ".join(f"{k}={asked[k]!r} (the task: {wanted[k]!r})" for k in differ)
        flags = lm_eval_flags(task)
        run = f"with {' '.join(flags)}" if flags else "without --apply_chat_template and --system_instruction"
        raise CannotRun(f"--baseline: lm-eval asked task {task.task} other prompts than the candidate gets: {said}; "
                        f"run lm_eval {run} (arena task export prints the command)")


def _asked_alike(task, baseline, candidate) -> None:
    """`CannotRun` when the baseline run was given other prompts than the candidate, item by
    item (lm-eval's `prompt_hash` against ours): the paired test would compare answers to
    different questions. lm-eval sends only the last user turn of a multi-turn document,
    and renders templates over fields HF datasets rewrote (dates, numbers)."""
    from evaluators.gate_scores import other_prompts

    if baseline is None or candidate is None or task.output_type not in ("generate_until", "multiple_choice"):
        return
    differ = other_prompts(baseline, candidate)
    if differ:
        _, theirs, ours = differ[0]
        paired = sum(k in baseline.prompts for k in candidate.prompts)
        why = ""
        if task.num_fewshot:  # lm-eval samples the examples with its own seed (as turns under --apply_chat_template)
            why += f"lm-eval picks a {task.num_fewshot}-shot task's examples its own way; "
        if task.doc_to_history:
            why += "lm-eval sends only a multi-turn document's last user turn; "
        raise CannotRun(f"--baseline: {len(differ)} of {paired} items of task {task.task} were asked other prompts "
                        f"than the candidate gets, e.g. {theirs!r} where the candidate gets {ours!r}; {why}compare "
                        f"runs asked alike, or pass --allow-other-prompts when the baseline is another model "
                        f"family on purpose (another chat template)")


@click.command("check")
@click.option("--baseline", required=True,
              help="Baseline candidate, or an lm-eval output directory (results_*.json + samples_*.jsonl).")
@click.option("--candidate", required=True, help="The candidate to gate.")
@click.option("--task", "task_files", required=True, help="Task YAML file(s), comma-separated.")
@click.option("--margin", type=float, default=0.02, show_default=True, help="Non-inferiority margin, in metric units.")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="Level, Holm-corrected across tasks.")
@click.option("--metric", default=None, help="Gate on this metric in every task (default: each task's first metric).")
@click.option("--limit", type=LIMIT, default=None, help="Only the first N documents of each task.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write JUnit XML here.")
@click.option("--json", "json_path", is_flag=False, flag_value="-", default=None,
              help="Write the verdicts as JSON to this file (no value or '-': to stdout, instead of the table).")
@click.option("--rerun", is_flag=True, help="Run fresh evals even where cached ones exist.")
@click.option("--allow-other-prompts", is_flag=True,
              help="Gate against a baseline directory whose items were asked other prompts (another chat template).")
@_chat_options
def check_cmd(baseline: str, candidate: str, task_files: str, margin: float, alpha: float, metric: str | None, limit,
              junit_path: Path | None, json_path: str | None, rerun: bool, allow_other_prompts: bool,
              apply_chat_template, system_instruction, fewshot_as_multiturn) -> None:
    """Gate CANDIDATE against BASELINE on paired per-sample scores: exit 0 pass, 1 regression, 2 could not run."""
    from evaluators.regression import compare, exit_code, verdicts_json, write_junit

    to_stdout = json_path == "-"
    try:
        if not 0 < alpha < 1:
            raise CannotRun(f"--alpha {alpha}: expected a level in (0, 1)")
        if not margin >= 0 or margin == float("inf"):  # nan compares false
            raise CannotRun(f"--margin {margin}: expected a finite number >= 0")
        for option, out in (("--junit", junit_path), ("--json", None if to_stdout else json_path)):
            if out is not None and not Path(out).parent.is_dir():  # found now, not after the evals
                raise CannotRun(f"{option} {out}: no directory {Path(out).parent}")
        tasks = [_task_file(f, apply_chat_template=apply_chat_template, system_instruction=system_instruction,
                            fewshot_as_multiturn=fewshot_as_multiturn) for f in _names(task_files)]
        if not tasks:
            raise CannotRun("--task: name at least one task file")
        names = [t.task for t in tasks]
        if len(set(names)) != len(names):
            raise CannotRun(f"--task: two task files define the same task name {sorted(names)!r}")
        s = settings()
        baseline_dir = Path(baseline) if Path(baseline).is_dir() else None
        with open_store(s) as store:
            if baseline_dir is not None:
                from evaluators.gate_scores import load_lm_eval_results

                try:
                    baseline_scores = load_lm_eval_results(baseline_dir)
                except ValueError as exc:
                    raise CannotRun(f"--baseline: {exc}") from None
                for t in tasks:
                    _same_prompts(t, baseline_scores.get(t.task))
                scores = _gather_scores(store, s, tasks, [candidate], limit, rerun, to_stdout)
                for t in tasks:
                    if not allow_other_prompts:
                        _asked_alike(t, baseline_scores.get(t.task), scores[candidate].get(t.task))
            else:
                run = list(dict.fromkeys([baseline, candidate]))
                scores = _gather_scores(store, s, tasks, run, limit, rerun, to_stdout)
                baseline_scores = scores[baseline]
        verdicts = compare(baseline_scores, scores[candidate], default_margin=margin, alpha=alpha,
                           metrics={t: metric for t in names} if metric else None, tasks=names)
    except CannotRun as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (ArenaError, ValueError) as exc:
        click.echo(f"error: {getattr(exc, 'message', None) or exc}", err=True)
        sys.exit(2)
    text = json.dumps(verdicts_json(verdicts), indent=2, ensure_ascii=False) if json_path is not None else None
    try:
        if junit_path is not None:
            write_junit(verdicts, junit_path)
        if text is not None and not to_stdout:
            Path(json_path).write_text(text, encoding="utf-8")
    except OSError as exc:  # a gate whose report is lost could not report: 2, never 1
        click.echo(f"error: cannot write {exc.filename}: {exc.strerror}", err=True)
        sys.exit(2)
    if to_stdout:
        click.echo(text)
    code = exit_code(verdicts)
    if not to_stdout:
        _print_verdicts(verdicts, str(baseline), candidate, margin)
        click.echo({0: "PASS", 1: "REGRESSION", 2: "COULD NOT RUN"}[code])
    if code == 2:
        reason = next((f"{v.task}: {v.reason}" for v in verdicts if v.status == "error"), "nothing to compare")
        click.echo(f"error: {reason}", err=True)
    sys.exit(code)
