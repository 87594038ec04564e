"""`arena trace` and `arena curate`."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from service.cli.common import call_with_queue, echo_json, follow_job, open_store, settings


@click.command("trace")
@click.option("--candidate", required=True)
@click.option("--eval", "evals", multiple=True, help="Eval id whose failing samples to trace (repeatable).")
@click.option("--battles", is_flag=True, help="Also trace arena battles the candidate lost or that were voted both-bad.")
@click.option("--top", default=50, show_default=True, help="Records shown in the report.")
@click.option("--threshold", default=1.0, show_default=True, help="A sample scoring below this fails.")
@click.option("--metric", default=None, help="Per-sample metric to threshold (default: the task's first).")
@click.option("--no-gold", is_flag=True,
              help="Ignore the evals' gold answers: trace the bad outputs alone (no reference conflicts).")
@click.option("--refused", is_flag=True, help="Trace only failures whose output is a refusal (over-refusals).")
@click.option("--checkpoints", type=click.IntRange(min=1), default=None,
              help="Trace at most N checkpoints, spread over training (default: the run's --attribution-checkpoints).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Also copy the report here.")
@click.option("--json", "json_out", is_flag=True)
def trace_cmd(candidate, evals, battles, top, threshold, metric, no_gold, refused, checkpoints, out, json_out) -> None:
    """Trace a candidate's failures to the training records that caused them; write the report."""
    from service import traces
    from service.cli.train import _local_worker

    s = settings()
    with open_store(s) as store:
        job = call_with_queue(store, s, traces.start_trace, candidate=candidate, evals=list(evals), battles=battles,
                              top=top, threshold=threshold, metric=metric, gold=not no_gold, checkpoints=checkpoints,
                              refused=refused)
        with _local_worker(store, s):
            final = follow_job(store, job.id, f"trace {candidate}", json_out)
    report = traces.load_report(s, job.id)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("report.json", "report.html", "report.md"):
            shutil.copy(traces.report_dir(s, job.id) / name, out / name)
    if json_out:
        echo_json({"report": job.id, "dir": str(out or traces.report_dir(s, job.id)), "result": final["result"]})
        return
    method = report["method"]
    click.echo(f"report {job.id}: {report['n_failures']} failures traced over {report['n_records']} records "
               f"at {len(method['checkpoints'])} checkpoints")
    if (method.get("prompts") or {}).get("note"):
        click.echo(f"note: {method['prompts']['note']}", err=True)
    for e in report["examples"][:10]:
        flags = ("; contradicts gold" if e["reference_conflict"] else "") + ("; " + e["checks"][0][:50] if e["checks"] else "")
        turns = e.get("exchanges") or [[e["prompt"], e["answer"]]]  # a chat shows each exchange
        said = " / ".join(f"{q[:50]!r} -> {a[:30]!r}" for q, a in turns[:3]) + (" / …" if len(turns) > 3 else "")
        click.echo(f"  #{e['rank']:<3} record {e['index']:<5} score {e['score']:+.3f}  {said}{flags}")
    for f in [f for f in report.get("sources") or [] if f["suspect"]][:5]:
        click.echo(f"suspect {f['message']}  (arena curate --drop-source {f['field'] + '=' if f['field'] != 'source' else ''}{f['value']})")
    cost = method.get("cost") or {}
    if cost:
        click.echo("cost: " + ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.1f}s" for k, v in cost.items()))
    click.echo(f"written to {out or traces.report_dir(s, job.id)} (report.html, report.json, report.md)")


@click.command("curate")
@click.option("--report", "report_ref", required=True, help="Report id, or a report directory.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Next round's dataset (JSONL).")
@click.option("--drop-top", type=click.IntRange(min=1), default=None, help="Drop the K records most responsible for the failures.")
@click.option("--drop-flagged", is_flag=True, help="Drop records the checks flag (duplicates, garbled, overlap) or that contradict gold.")
@click.option("--drop-source", "drop_sources", multiple=True, metavar="VALUE|FIELD=VALUE",
              help="Drop every record of this source (or FIELD=VALUE of other metadata, e.g. annotator=ann-7); repeatable. "
                   "The report's 'By source' section says which ones the trace blames.")
@click.option("--reason", default=None, help="Why (kept with each record dropped by --drop-source).")
@click.option("--budget", type=click.IntRange(min=1), default=None, help="Then keep at most N records, chosen by embedding clustering.")
@click.option("--seed", default=0, show_default=True)
@click.option("--add-as", default=None, help="Also add it as a new version of this dataset name (lineage to the source).")
@click.option("--add-corrections", is_flag=True,
              help="Also add every accepted arena correction not yet used in a dataset version, as a record (the battle's "
                   "conversation, then the corrected answer; meta source=correction, battle, reviewer, correction). "
                   "Corrections are arena-wide: battles on any prompt, not only this dataset's. With --add-as they are "
                   "marked used in that version; the budget does not apply to them.")
@click.option("--json", "json_out", is_flag=True)
def curate_cmd(report_ref, out, drop_top, drop_flagged, drop_sources, reason, budget, seed, add_as, add_corrections,
               json_out) -> None:
    """Write the next round's dataset from a report, with the reason for every removed record."""
    import json

    from evaluators.records import chat_row
    from service import curate, datasets, traces
    from service.errors import InvalidInput

    if not drop_top and not drop_flagged and not budget and not drop_sources and not add_corrections:
        raise InvalidInput("say what to drop or add: --drop-top K, --drop-flagged, --drop-source S, --budget N "
                           "and/or --add-corrections")
    if add_as:
        from service.domain import check_name

        check_name(add_as, "dataset name")  # before any file is written
    s = settings()
    report = traces.load_report(s, report_ref, allow_path=True)
    result = curate.curate_from_report(s, report, drop_top=drop_top, drop_flagged=drop_flagged, budget=budget, seed=seed,
                                       drop_sources=drop_sources, reason=reason)
    additions, used = [], []
    if add_corrections:
        from service.cli.corrections import accepted_records

        with open_store(s) as store:
            additions, used = accepted_records(store, result.kept)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for rec in [*result.kept, *additions]:
            f.write(json.dumps(chat_row(rec), ensure_ascii=False) + "\n")
    added_path = out.with_suffix(".added.jsonl")  # the other half of the diff: what came in, and from whom
    if add_corrections:
        with added_path.open("w") as f:
            from service.corrections import added_row

            for rec, c in zip(additions, used):
                f.write(json.dumps(added_row(rec, c), ensure_ascii=False) + "\n")
    removed_path = out.with_suffix(".removed.jsonl")
    with removed_path.open("w") as f:
        for item in result.removed:
            f.write(json.dumps({"index": item.index, "reason": item.reason, **chat_row(item.record)}, ensure_ascii=False) + "\n")
    added = None
    if add_as:
        with open_store(s) as store:
            added, _ = store._run(datasets.add_dataset(store.store, s.data_dir, out.read_bytes(), name=add_as, filename=out.name,
                                                       parent=f"{report['dataset']['name']}@{report['dataset']['id']}",
                                                       note=f"curated from report {report['id']}"))
            if used:
                from service.corrections import mark_used

                store._run(mark_used(store.store, [c.id for c in used], added.ref))
    still = curate.open_errors(report, {item.index for item in result.removed})
    summary = {"kept": len(result.kept), "removed": len(result.removed), "out": str(out), "removed_file": str(removed_path),
               "dataset": added.ref if added else None, "open_errors": still}
    if add_corrections:
        summary.update(added_corrections=len(additions), added_file=str(added_path))
    if json_out:
        echo_json(summary)
        return
    click.echo(f"kept {len(result.kept)} of {result.n_input} records -> {out}; reasons for the {len(result.removed)} removed in {removed_path}")
    if still:
        kinds = ", ".join(sorted({f["check"] for f in still}))
        records = sorted({i for f in still for i in f["record_indices"]})
        shown = ", ".join(map(str, records[:12])) + (" …" if len(records) > 12 else "")
        click.echo(f"note: {len(still)} error-level finding{'s' if len(still) != 1 else ''} ({kinds}) still hold in the kept "
                   f"records ({shown}): pick the right side by hand, or drop one with --drop-source / --drop-top "
                   "(--json lists them)", err=True)
    if add_corrections:
        click.echo(f"added {len(additions)} correction{'s' if len(additions) != 1 else ''} (accepted, not yet used) -> {added_path}")
    if added:
        click.echo(f"added as {added.ref} (id {added.id}), curated from {report['dataset']['ref']}")
