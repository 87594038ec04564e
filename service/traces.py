"""Tracing failures to training records: the `trace` job and its reports (curating the
next round from a report is `service.curate`).

Failures come from benchmark samples below a threshold (eval runs) and from arena votes
the candidate lost or that were voted both-bad. The job scores every training record of
the candidate's dataset version (`evaluators.attribution.trace_failures`, with gradient
features cached per run and dataset version under `<data dir>/features/`), runs
the dataset checks, and writes report.json / report.html / report.md under
`<data dir>/reports/<report id>/`.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import msgspec

from evaluators.records import Conversation, Message, user_turn
from service.checkpoints import spread
from service.config import Settings
from service.domain import kept_indices
from service.ids import check_id, under
from service.errors import InvalidInput, NotFound
from service.jobs import JobContext, enqueue, job_handler

#: Checkpoints a trace uses when neither the run nor the request says.
DEFAULT_CHECKPOINTS = 5
PRIMARY_METRICS = ("exact_match", "acc", "acc_norm", "token_f1", "rouge_l", "chrf")


def report_dir(settings: Settings, report_id: str) -> Path:
    return under(settings.data_dir, "reports", check_id("report", report_id))


class FailureSet(msgspec.Struct):
    """Failures and passes read from an eval's samples, and how each failure's prompt was
    recovered (`how`, parallel to `failures`): `from_messages` kept the conversation sent,
    `parsed` was read back from the rendered prompt with the base's template, `as_text`
    could be neither and is traced as one user turn holding the whole prompt (the report
    says so)."""

    failures: list[Any]
    passes: list[Any]
    how: list[str] = msgspec.field(default_factory=list)

    @property
    def from_messages(self) -> int:
        return self.how.count("from_messages")

    @property
    def parsed(self) -> int:
        return self.how.count("parsed")

    @property
    def as_text(self) -> int:
        return self.how.count("as_text")


class LazyParser:
    """`prompt_parser` for a candidate, built on first use: loading the tokenizer and
    rendering the probes is skipped when every sample kept its conversation."""

    def __init__(self, base_path: str, adapter_dir: str) -> None:
        self._args, self._parse = (base_path, adapter_dir), None

    def __call__(self, text: str) -> Conversation | None:
        if self._parse is None:
            self._parse = _prompt_parser(*self._args)
        return self._parse(text)


def _sample_prompt(row: dict[str, Any], parse) -> tuple[Conversation, str]:
    """The conversation a sample was asked in, and how it was recovered."""
    messages = row.get("messages")
    if isinstance(messages, list) and messages:
        try:
            turns = tuple(Message(m["role"], str(m["content"])) for m in messages
                          if m.get("role") in ("system", "user", "assistant"))
        except (TypeError, KeyError, AttributeError):
            turns = ()
        if turns and turns[-1].role == "user":
            return Conversation(messages=turns), "from_messages"
    text = str(row.get("prompt", ""))
    conversation = parse(text) if parse is not None else None
    if conversation is not None:
        return conversation, "parsed"
    return user_turn(text), "as_text"


def eval_failures(settings: Settings, eval_id: str, candidate: str, *, metric: str | None = None,
                  threshold: float = 1.0, parse=None, gold: bool = True) -> FailureSet:
    """Failures and passes of `candidate` in eval `eval_id`: samples whose metric is below
    `threshold` fail; the others are the contrast set. Each keeps the conversation it was
    asked in: the sample's `messages`, else its prompt read back by `parse` (see
    `evaluators.chat_format.prompt_parser`). `gold=False` drops the gold answers (the
    trace then rests on the bad outputs alone)."""
    from evaluators.attribution import Failure
    from service.evals import eval_dir

    directory = eval_dir(settings, eval_id)
    files = sorted(directory.glob("*/samples_*.jsonl"))
    if not files:
        raise NotFound(f"eval {eval_id!r} has no per-sample results")
    found = FailureSet(failures=[], passes=[])
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("candidate") not in (None, candidate):
                continue
            name = metric or next((m for m in PRIMARY_METRICS if isinstance(row.get(m), (int, float))), None)
            if name is None or not isinstance(row.get(name), (int, float)):
                raise InvalidInput(f"eval {eval_id}: samples have no numeric metric {metric or PRIMARY_METRICS}")
            target = row.get("target")
            answer = target[0] if isinstance(target, list) and target else target
            prompt, how = _sample_prompt(row, parse)
            item = Failure(prompt=prompt, output=str(row.get("response", "")),
                           gold=None if answer is None or not gold else str(answer), id=f"{eval_id}:{row.get('doc_id')}")
            if float(row[name]) < threshold:
                found.failures.append(item)
                found.how.append(how)
            else:
                found.passes.append(item)
    return found


def _side(vote: dict[str, Any], side: str) -> tuple[Conversation | None, str, str]:
    """(the conversation a side answered, its answer, how it was recovered) of a logged
    vote: the turns of its FastChat `conversation_<side>` before the final answer
    ("from_messages"), else the vote's `prompt` as one user turn ("as_text")."""
    conversation = [t for t in vote.get(f"conversation_{side}") or []
                    if isinstance(t, dict) and t.get("role") in ("system", "user", "assistant")]
    answer = vote.get(f"answer_{side}")
    if conversation and conversation[-1].get("role") == "assistant":
        answer = conversation[-1].get("content", "") if answer is None else answer
        conversation = conversation[:-1]
    turns = tuple(Message(t["role"], str(t.get("content", ""))) for t in conversation)
    how = "from_messages"
    if not turns or turns[-1].role != "user":
        prompt = vote.get("prompt")
        turns, how = ((Message("user", str(prompt)),) if prompt else ()), "as_text"
    if answer is None:
        answer = ""
    return (Conversation(messages=turns) if turns else None), str(answer), how


async def battle_failures(store, candidate: str, *, gold: bool = True) -> FailureSet:
    """Arena failures of `candidate`: battles it lost or that were voted both-bad (human and
    judge), each in the conversation the candidate answered. `gold=False` drops a pool
    prompt's reference answer, as for evals."""
    from evaluators.attribution import Failure

    found = FailureSet(failures=[], passes=[])
    async for vote_id, vote in store.iter_votes():
        for side, other in (("a", "b"), ("b", "a")):
            if vote.get(f"model_{side}") != candidate:
                continue
            lost = vote.get("winner") == f"model_{other}" or vote.get("winner") == "tie (bothbad)"
            prompt, answer, how = _side(vote, side)
            if lost and prompt is not None and answer:
                reference = vote.get("reference") if gold else None
                found.failures.append(Failure(prompt=prompt, output=answer, gold=reference, id=f"vote:{vote_id}"))
                found.how.append(how)
    return found


async def start_trace(store, queue, settings: Settings, *, candidate: str, evals: list[str], battles: bool, top: int = 50,
                      threshold: float = 1.0, metric: str | None = None, gold: bool = True,
                      checkpoints: int | None = None, refused: bool = False) -> Any:
    """Validate and enqueue a trace job; its id is the report id. `checkpoints` caps the
    checkpoints traced (default: the run's `attribution_checkpoints`, else 5); `refused`
    traces only the failures whose output is a refusal (over-refusals)."""
    from service.evals import eval_dir

    cand = await store.get_candidate(candidate)
    if cand.method != "sft":
        # Attribution scores SFT records against the run's own checkpoints; a DPO run's
        # checkpoints were trained on preference pairs, which it does not read.
        raise InvalidInput(f"candidate {candidate!r} was trained by {cand.method.upper()} from {cand.parent!r}: "
                           f"trace its SFT parent {cand.parent!r} instead")
    if not evals and not battles:
        raise InvalidInput("nothing to trace: give eval ids (--eval) and/or --battles")
    if checkpoints is not None and (isinstance(checkpoints, bool) or not isinstance(checkpoints, int) or checkpoints < 1):
        raise InvalidInput(f"checkpoints: expected an integer >= 1, got {checkpoints!r}")
    for eval_id in evals:
        if not eval_dir(settings, eval_id).exists():
            raise NotFound(f"no eval {eval_id!r}")
    report_id = f"rep_{secrets.token_hex(8)}"
    params = {"candidate": candidate, "evals": evals, "battles": battles, "top": top, "threshold": threshold,
              "metric": metric, "gold": gold, "checkpoints": checkpoints, "refused": refused}
    return await enqueue(store, queue, settings, "trace", params, job_id=report_id)


def _prompt_parser(base_path: str, adapter_dir: str):
    """Reads prompts back in the format the candidate was served with: the adapter's own
    chat template when it ships one, else its base's."""
    from transformers import AutoTokenizer

    from evaluators.chat_format import prompt_parser
    from service.generation._models import _adapter_chat_template

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    template = _adapter_chat_template(Path(adapter_dir))
    if template is not None:
        tokenizer.chat_template = template
    return prompt_parser(tokenizer)


@job_handler("trace")
def trace_job(ctx: JobContext) -> dict[str, Any]:
    from evaluators.attribution import trace_failures
    from evaluators.datachecks import check_dataset
    from evaluators.reports import build_report, write_report
    from service import datasets
    from service.runs import run_dir
    from service.training import load_train_result

    p, store, settings = ctx.params, ctx.store, ctx.settings
    cand = ctx.call(store.get_candidate(p["candidate"]))
    base = ctx.call(store.get_base(cand.base))
    dsv = ctx.call(store.resolve_dataset(f"{cand.dataset.split('@')[0]}@{cand.dataset_id}"))
    result = load_train_result(run_dir(settings, cand.run_id))
    if result is None or not result.checkpoints:
        raise InvalidInput(f"candidate {cand.name}: its run {cand.run_id} kept no checkpoints to trace with")
    records, lines = datasets.read_records(settings.data_dir, dsv.id)
    # What the run was given: the version minus its held-out split as it was then (a split
    # made or changed since does not change what the candidate trained on).
    held = cand.held_out if cand.held_out is not None else dsv.split.test_indices if dsv.split else ()
    version_index = kept_indices(len(records), held)
    train_records = [records[i] for i in version_index]
    trained = set(result.train_indices)
    in_training = [j in trained for j in range(len(train_records))]

    cost: dict[str, float] = {}
    t0 = time.perf_counter()
    failures, passes, sources, hows = [], [], [], []
    parse = LazyParser(base.path, cand.adapter_dir)
    for eval_id in p["evals"]:
        found = eval_failures(settings, eval_id, cand.name, metric=p.get("metric"), threshold=p.get("threshold", 1.0),
                              parse=parse, gold=p.get("gold", True))
        failures += found.failures
        passes += found.passes
        sources += [f"eval {eval_id}"] * len(found.failures)
        hows += found.how
    if p["battles"]:
        found = ctx.call(battle_failures(store, cand.name, gold=p.get("gold", True)))
        failures += found.failures
        sources += ["arena"] * len(found.failures)
        hows += found.how
    if p.get("refused"):
        from evaluators.datachecks import is_refusal

        kept = [k for k, f in enumerate(failures) if is_refusal(f.output)]
        failures, sources, hows = [failures[k] for k in kept], [sources[k] for k in kept], [hows[k] for k in kept]
        if not failures:
            raise InvalidInput(f"no refused failures to trace for {cand.name}: no failing output reads as a refusal")
    recovered = {how: hows.count(how) for how in ("from_messages", "parsed", "as_text")}
    if not failures:
        raise InvalidInput(f"no failures to trace for {cand.name}: every sample passed and no battle was lost")
    cost["read_failures_s"] = time.perf_counter() - t0
    limit = p.get("checkpoints") or cand.config.get("attribution_checkpoints") or DEFAULT_CHECKPOINTS
    checkpoints = spread(result.checkpoints, int(limit))  # runs from before the bound kept them all
    ctx.progress(0.02, f"{len(failures)} failures, {len(passes)} passes, {len(train_records)} records, "
                       f"{len(checkpoints)} of {len(result.checkpoints)} checkpoints")
    t0 = time.perf_counter()
    # Messages name records as the report does: by their index in the version.
    checks = check_dataset(train_records, line_numbers=[lines[i] for i in version_index], record_ids=version_index)
    cost["dataset_checks_s"] = time.perf_counter() - t0

    def progress(stage: str, done: int, total: int) -> None:
        ctx.check_cancelled()
        ctx.progress(0.05 + 0.9 * done / max(total, 1), f"{stage} {done}/{total}")

    attribution = trace_failures(
        base.path, [c.path for c in checkpoints], train_records, failures, passes,
        store_dir=settings.data_dir / "features" / cand.run_id / dsv.id, progress=progress,
        max_length=int(cand.config.get("max_length", 512)),
    )
    # Report in the version's own numbering: record i of the trace is version record version_index[i].
    attribution = msgspec.structs.replace(
        attribution,
        records=[msgspec.structs.replace(r, index=version_index[r.index]) for r in attribution.records],
        ranking=[version_index[i] for i in attribution.ranking],
        failures=[msgspec.structs.replace(t, top_records=[version_index[i] for i in t.top_records],
                                          opposing_records=[version_index[i] for i in t.opposing_records],
                                          conflicting_records=[version_index[i] for i in t.conflicting_records])
                  for t in attribution.failures],
    )
    checks = _reindex_checks(checks, version_index, len(records))
    in_version_training = [False] * len(records)
    for j, i in enumerate(version_index):
        in_version_training[i] = in_training[j]
    cost.update({k: v for k, v in attribution.timings.items() if k != "total_s"})
    prompts: dict[str, Any] = dict(recovered)
    if recovered["as_text"]:
        prompts["note"] = (f"{recovered['as_text']} failing prompts were neither kept as a conversation (by the eval or "
                           "the arena vote) nor written in the base's chat format, so they were traced as one user turn "
                           "holding the whole prompt; re-run the eval with apply_chat_template: true (arena eval "
                           "--apply-chat-template) to trace them in the context the model answered in.")
    t0 = time.perf_counter()
    report = build_report(
        report_id=ctx.job_id,
        candidate={"name": cand.name, "run_id": cand.run_id, "base": cand.base},
        dataset={"ref": dsv.ref, "id": dsv.id, "name": dsv.name},
        records=records, line_numbers=lines, in_training=in_version_training, attribution=attribution,
        failures=failures, failure_sources=sources, checks=checks, top=int(p.get("top", 50)),
        method={"prompts": prompts, "cost": cost, "checkpoints_available": len(result.checkpoints),
                "embedding_model": _embedding_model(),
                "gold": bool(p.get("gold", True)), "refused_only": bool(p.get("refused"))},
    )
    cost["report_s"] = time.perf_counter() - t0  # building it; writing the HTML's plot is not counted
    report["method"]["cost"] = {k: round(v, 3) for k, v in cost.items()}
    from service.i18n import HTML_LANG, known_locale, translations

    locale = known_locale(settings.locale)  # the files' language; the page follows each reader's
    paths = write_report(report, report_dir(settings, ctx.job_id), gettext=translations(locale).gettext, lang=HTML_LANG[locale])
    top = report["examples"][: min(10, len(report["examples"]))]
    return {"report_dir": str(report_dir(settings, ctx.job_id)), "paths": {k: str(v) for k, v in paths.items()},
            "failures": len(failures), "top": [{"index": e["index"], "score": e["score"]} for e in top]}


def _embedding_model() -> str:
    from evaluators.embeddings import embedding_model_name

    return embedding_model_name()


def _reindex_checks(checks, version_index: list[int], n: int):
    return checks.renumbered(version_index, n) if hasattr(checks, "summary") else checks


def load_report(settings: Settings, report: str, *, allow_path: bool = False) -> dict[str, Any]:
    """A report by id; with `allow_path` (the CLI, on the user's own files) also by a path
    to a report directory or report.json."""
    path = Path(report)
    if allow_path and path.is_dir():
        path = path / "report.json"
    if not (allow_path and path.is_file()):
        if allow_path and not report.startswith("rep_"):
            raise NotFound(f"no report {report!r} (give a report id or a report directory)")
        path = report_dir(settings, report) / "report.json"
    if not path.exists():
        raise NotFound(f"no report {report!r}")
    return json.loads(path.read_text())
