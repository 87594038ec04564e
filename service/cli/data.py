"""`arena data add|list|show|split|check`."""

from __future__ import annotations

from pathlib import Path

import click
import msgspec

from service import datasets
from service.cli.common import ListingGroup, echo_json, open_store, settings
from service.domain import kept_indices
from service.errors import InvalidInput


@click.group("data", cls=ListingGroup)
def data_cmd() -> None:
    """Add, list, show, split and check datasets."""


def _mapping_options(command):
    """`--dataset-info FILE --dataset NAME`: LLaMA-Factory's column mapping (see `_mapping`)."""
    command = click.option("--dataset", "info_name", default=None,
                           help="The dataset_info.json entry to use (with --dataset-info).")(command)
    return click.option("--dataset-info", "dataset_info", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help="LLaMA-Factory's dataset_info.json: read FILE with the column mapping of --dataset.")(command)


@data_cmd.command("add")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Dataset name (letters, digits, . _ -).")
@click.option("--format", "fmt", type=click.Choice(datasets.FORMATS), default=None, help="Skip detection.")
@click.option("--parent", default=None, help="NAME[@VERSION] this version was curated from (lineage).")
@click.option("--note", default="", help="A note kept with the version.")
@click.option("--encoding", default=None, help="The file's text encoding when not UTF-8 (e.g. gb18030, gbk, big5).")
@_mapping_options
@click.option("--json", "json_out", is_flag=True)
def data_add(file: Path, name: str, fmt: str | None, parent: str | None, note: str, encoding: str | None,
             dataset_info: Path | None, info_name: str | None, json_out: bool) -> None:
    """Validate FILE (JSONL, JSON array or Parquet) and store it as a new version of dataset NAME."""
    if not file.exists():
        raise InvalidInput(f"{file}: no such file")
    mapping = _mapping(dataset_info, info_name, fmt)
    s = settings()
    size = file.stat().st_size
    if size > s.max_upload_bytes:
        from service.errors import TooLarge

        raise TooLarge(f"{file}: {size} bytes is over the limit of {s.max_upload_bytes} bytes (ARENA_MAX_UPLOAD_BYTES)")
    raw = file.read_bytes()
    with open_store(s) as store:
        dsv, created = store._run(
            datasets.add_dataset(store.store, s.data_dir, raw, name=name, filename=file.name, fmt=fmt,
                                 max_bytes=s.max_upload_bytes, parent=parent, note=note, encoding=encoding,
                                 mapping=mapping)
        )
    if json_out:
        echo_json({"created": created, "dataset": dsv})
        return
    verb = "added" if created else "already there:"
    click.echo(f"{verb} {dsv.ref} (id {dsv.id}): {dsv.record_count} records, format {dsv.format}")
    for warning in dsv.warnings:
        click.echo(f"warning: {warning}", err=True)


def _mapping(dataset_info: Path | None, info_name: str | None, fmt: str | None):
    """The column mapping of `--dataset-info FILE --dataset NAME`, or None."""
    if dataset_info is None and info_name is None:
        return None
    if dataset_info is None or info_name is None:
        raise InvalidInput("--dataset-info and --dataset go together: the file and the entry in it to use")
    if fmt is not None:
        raise InvalidInput("--format and --dataset-info both say how to read the file; give one")
    from evaluators.bounded_json import TooDeep, check_depth
    from service.dataset_formats import column_mapping

    try:
        text = dataset_info.read_text(encoding="utf-8")
        check_depth(text)
        info = msgspec.json.decode(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{dataset_info}: cannot read ({exc})") from None
    except (msgspec.DecodeError, TooDeep) as exc:
        raise InvalidInput(f"{dataset_info}: not valid JSON ({exc})") from None
    return column_mapping(info, info_name, str(dataset_info))


@data_cmd.command("list")
@click.option("--json", "json_out", is_flag=True)
def data_list(json_out: bool) -> None:
    """Datasets and their versions."""
    with open_store() as store:
        rows = [(name, store.list_dataset_versions(name)) for name in store.list_dataset_names()]
    if json_out:
        echo_json([{"name": n, "versions": v} for n, v in rows])
        return
    if not rows:
        click.echo("no datasets yet: add one with `arena data add FILE --name NAME`")
    for name, versions in rows:
        latest = versions[-1]
        click.echo(f"{name}  {len(versions)} version(s); latest @{latest.version} id {latest.id}, {latest.record_count} records, {latest.format}")


@data_cmd.command("show")
@click.argument("ref")
@click.option("--limit", default=5, show_default=True, help="Records to print.")
@click.option("--json", "json_out", is_flag=True)
def data_show(ref: str, limit: int, json_out: bool) -> None:
    """A version's metadata and its first records (REF is NAME[@VERSION])."""
    s = settings()
    with open_store(s) as store:
        dsv = store.resolve_dataset(ref)
    records, lines = datasets.read_records(s.data_dir, dsv.id)
    if json_out:
        echo_json({"dataset": dsv, "records": [{"index": i, "line": lines[i], "messages": r.messages} for i, r in enumerate(records[:limit])]})
        return
    click.echo(f"{dsv.ref}  id {dsv.id}  {dsv.record_count} records  format {dsv.format}  from {dsv.source_filename}")
    if dsv.parent:
        click.echo(f"  curated from version {dsv.parent}")
    if dsv.split:
        click.echo(f"  split: {len(dsv.split.test_indices)} held out (fraction {dsv.split.test_fraction}, seed {dsv.split.seed})")
    for i, r in enumerate(records[:limit]):
        click.echo(f"--- record {i} (line {lines[i]})")
        for m in r.messages:
            click.echo(f"  {m.role}: {m.content[:300]}")


@data_cmd.command("split")
@click.argument("ref")
@click.option("--test-fraction", default=0.1, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--force", is_flag=True, help="Re-split a version candidates were trained on (their held-out "
                                            "benchmarks would then hold records they trained on).")
def data_split(ref: str, test_fraction: float, seed: int, force: bool) -> None:
    """Make a deterministic held-out split of REF, recorded on the version. A version
    candidates were trained on keeps its split unless --force."""
    with open_store() as store:
        dsv = store.resolve_dataset(ref)
        split = datasets.make_split(dsv.record_count, test_fraction, seed)
        dsv = store.split_dataset(dsv, split, force=force)
    click.echo(f"{dsv.ref}: {len(split.test_indices)} held out, {dsv.record_count - len(split.test_indices)} for training (seed {seed})")
    _ = msgspec


@data_cmd.command("check")
@click.argument("ref")
@click.option("--expected-refusal-rate", type=float, default=None, help="Share of refusals you expect (default 0.05).")
@click.option("--format", "fmt", type=click.Choice(datasets.FORMATS), default=None,
              help="With a FILE: its record format (detected when not given).")
@click.option("--encoding", default=None, help="With a FILE: its text encoding when not UTF-8 (e.g. gb18030).")
@_mapping_options
@click.option("--workers", type=int, default=None, help="Processes scanning records (default: every CPU).")
@click.option("--json", "json_out", is_flag=True)
@click.option("--fail-on", type=click.Choice(["never", "error", "warning"]), default="never", show_default=True,
              help="Exit 1 when a finding of this severity (or worse) exists.")
def data_check(ref: str, expected_refusal_rate: float | None, fmt: str | None, encoding: str | None,
               dataset_info: Path | None, info_name: str | None, workers: int | None, json_out: bool, fail_on: str) -> None:
    """Check REF (a dataset NAME[@VERSION], or a dataset FILE, not stored) for duplicates,
    conflicting answers, refusal floods, format drift, outliers, garbled records, unsupported
    facts and train/eval overlap (a version's held-out split is the eval side).

    Records are read in blocks and kept as hashes and LSH keys, not text: memory grows by
    about 2.5 KB a record (1M records: 2.6 GB)."""
    import tempfile

    from evaluators.datachecks import CheckConfig, check_source

    if workers is not None and workers < 1:
        raise InvalidInput(f"--workers must be at least 1, got {workers}")
    try:
        config = CheckConfig() if expected_refusal_rate is None else CheckConfig(expected_refusal_rate=expected_refusal_rate)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="arena-check-") as tmp:
        path = Path(ref)
        mapping = _mapping(dataset_info, info_name, fmt)
        if mapping is not None and not path.is_file():
            raise InvalidInput(f"{ref}: no such file (--dataset-info applies to a FILE, not a stored dataset)")
        if path.is_file():
            total = _spool(path, Path(tmp) / "records.jsonl", fmt, encoding, workers, mapping)
            source, held, label = datasets.RecordFile(Path(tmp) / "records.jsonl"), [], str(path)
        elif path.suffix.lower() in (".jsonl", ".json", ".parquet") or "/" in ref or path.exists():
            raise InvalidInput(f"{ref}: no such file" if not path.exists() else f"{ref}: not a file")
        elif fmt is not None or encoding is not None:
            raise InvalidInput(f"{ref}: no such file (--format and --encoding apply to a FILE, not a stored dataset)")
        else:
            s = settings()
            with open_store(s) as store:
                dsv = store.resolve_dataset(ref)
            held = sorted(dsv.split.test_indices) if dsv.split else []
            records_file = datasets.records_path(s.data_dir, dsv.id)
            held_set = set(held)
            source = datasets.RecordFile(records_file, lambda row: row not in held_set)
            total, label = dsv.record_count, f"{dsv.ref} ({dsv.id})"
        eval_file = datasets.RecordFile(source.path, lambda row: row in held_set) if held else None
        eval_records = eval_file.read(0, len(eval_file))[0] if eval_file else None
        # Records go by the version's own numbering, in messages and findings alike.
        ids = _kept_indices(total, held)
        report = check_source(source.read, len(source), eval_records=eval_records, config=config, workers=workers,
                              record_ids=ids)
    if held:
        report = report.renumbered(ids)
    findings = [msgspec.to_builtins(f) for f in report.findings]
    if json_out:
        head = {"file": str(path)} if path.is_file() else {"dataset": dsv.ref, "id": dsv.id}
        echo_json({**head, "records": total, "summary": report.to_dict()["summary"], "findings": findings})
    else:
        click.echo(f"{label}: {len(source)} training records checked" + (f", {len(held)} held out" if held else ""))
        for name, summary in report.summary.items():
            mark = "ok " if summary.findings == 0 else "!! "
            click.echo(f"  {mark}{name:<20} {summary.findings:>4} finding(s), {summary.records:>4} record(s) ({summary.rate:.1%})")
        for f in findings[:50]:
            where = ", ".join(f"#{i} (line {ln})" for i, ln in zip(f["record_indices"][:6], f["line_numbers"][:6]))
            click.echo(f"- [{f['severity']}] {f['check']}: {f['message']}  [{where}{' …' if len(f['record_indices']) > 6 else ''}]")
        if len(findings) > 50:
            click.echo(f"… {len(findings) - 50} more (use --json)")
    order = {"error": 2, "warning": 1, "info": 0}
    if fail_on != "never" and any(order[f["severity"]] >= order[fail_on] for f in findings):
        raise SystemExit(1)


def _spool(path: Path, out: Path, fmt: str | None, encoding: str | None, workers: int | None, mapping=None) -> int:
    """`datasets.spool_records`; for a Chinese file with a second CPU, in a forked process
    while this one loads jieba's dictionary and tagger, which the scan's workers and the
    pair checks inherit instead of loading them after the spool."""
    from evaluators import lang
    from evaluators._parallel import in_background, worker_count

    def spool() -> int:
        return datasets.spool_records(path, out, fmt, encoding=encoding, mapping=mapping)[0]

    if worker_count(workers) < 2 or encoding not in (None, "utf-8") or not lang.looks_chinese(path):
        return spool()
    with in_background(spool) as result:
        lang.load_segmenter(tagger=True)
    return result()


def _kept_indices(total: int, held: list[int]) -> list[int] | None:
    """Each training record's index in the version (held-out rows left out); None: the same."""
    return kept_indices(total, held) if held else None
