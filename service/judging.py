"""Judging sweeps: the `judge` job, and how a judge spec and a prompt source become judges
and battles.

Judges (`--judge`):
- `http(s)://HOST[/v1]` with `--judge-model M`: any OpenAI-compatible chat endpoint; the
  API key is the server's `ARENA_JUDGE_API_KEY`, read by the worker that runs the job,
  never named or sent by a request. `ARENA_JUDGE_ALLOWED_HOSTS` restricts the hosts.
- a profile of `ARENA_JUDGE_PROFILES` by name: its URL, model and key (server-side).
- `reference[:METRIC]`: no LLM; prefers the answer closer to the prompt's gold reference
  by `token_f1` (default), `rouge_l`, `chrf` or `exact_match`. Works offline.
- any other name: a candidate or base served by this service (the generation `/v1` uses).

Prompt sources (`--prompts`): `pool` (the arena's prompt pool), `human` (the battles
humans voted on: the same prompt, pair and answers, so agreement is measured on exactly
what the reviewers saw), `dataset:NAME[@V]` (its held-out split), or prompts given inline
(the CLI reads files and tasks and sends them).

Every pair of candidates on every prompt is judged in both orders; each parsed verdict is
one observation on the judge board; unparseable verdicts (after one retry) are counted as
errors in the job's result, never logged as votes. With `graded` an LLM judge answers on
Arena-Hard's five-point scale and a strong verdict (`[[A>>B]]`) is logged as
`STRONG_WEIGHT` (3) identical observations of its judgement, as Arena-Hard repeats it: the
counters, the rebuild, the export and the judgement-unit bootstrap then all see the same
votes.
"""

from __future__ import annotations

import itertools
import secrets
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import msgspec

from arena.battles import Battle, agreement
from arena.calibration import judge_verdicts
from arena.judge import Judge, JudgedPair, LLMJudge, OpenAIChatClient, ReferenceJudge, judge_both_orders
from service.config import Settings
from service.errors import InvalidInput
from service.jobs import JobCancelled, JobContext, enqueue, job_handler
from service.prompts import ArenaPrompt

REFERENCE_METRICS = ("token_f1", "rouge_l", "chrf", "exact_match")
_ERROR_SAMPLES = 20
_ANSWER_TOKENS = 256


class JudgeSpec(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Which judge, as stored in a job's params (no secrets: a URL judge's key is looked up
    by the worker, from its profile or `ARENA_JUDGE_API_KEY`)."""

    kind: str  # "url" | "model" | "reference"
    url: str | None = None
    model: str | None = None
    metric: str | None = None
    profile: str | None = None
    allow_both_bad: bool = False
    max_tokens: int = 512  # the judge's reply: explanation + verdict
    graded: bool = False  # Arena-Hard's prompt and five-point verdicts (LLM judges only)

    @property
    def name(self) -> str:
        """The judge's name in its votes (FastChat's `judge` field)."""
        if self.kind == "reference":
            return f"reference:{self.metric}"
        return f"llm:{self.model}"


def parse_judge_spec(text: str, *, model: str | None = None, allow_both_bad: bool = False, max_tokens: int = 512,
                     settings: Settings | None = None, graded: bool = False) -> JudgeSpec:
    """`--judge URL_OR_PROFILE_OR_CANDIDATE` (+ `--judge-model`) as a `JudgeSpec`;
    `InvalidInput` says what is missing or not allowed (a host off `ARENA_JUDGE_ALLOWED_HOSTS`,
    graded verdicts from the reference judge or together with "both bad")."""
    text = (text or "").strip()
    if max_tokens < 1:
        raise InvalidInput(f"judge max_tokens={max_tokens}: expected at least 1")
    if graded and (text == "reference" or text.startswith("reference:")):
        raise InvalidInput("graded verdicts ([[A>>B]] …) are asked of LLM judges; the reference judge has none")
    if graded and allow_both_bad:
        raise InvalidInput("graded verdicts have no \"both bad\" ([[D]]): ask for one or the other")
    profiles = settings.judge_profile_map if settings is not None else {}
    if text in profiles:
        profile = profiles[text]
        spec = JudgeSpec(kind="url", url=profile["url"], model=model or profile["model"], profile=text,
                         allow_both_bad=allow_both_bad, max_tokens=max_tokens, graded=graded)
    elif text.startswith(("http://", "https://")):
        if not model:
            raise InvalidInput(f"judge {text}: name the model to ask with --judge-model (the endpoint's model id)")
        spec = JudgeSpec(kind="url", url=text, model=model, allow_both_bad=allow_both_bad, max_tokens=max_tokens, graded=graded)
    elif text == "reference" or text.startswith("reference:"):
        metric = text.partition(":")[2] or "token_f1"
        if metric not in REFERENCE_METRICS:
            raise InvalidInput(f"judge {text}: metric {metric!r} is not one of {', '.join(REFERENCE_METRICS)}")
        return JudgeSpec(kind="reference", metric=metric, allow_both_bad=allow_both_bad)
    elif not text:
        raise InvalidInput("judge: give a URL of an OpenAI-compatible endpoint, a judge profile, `reference[:METRIC]`, "
                           "or a candidate name")
    else:
        return JudgeSpec(kind="model", model=text, allow_both_bad=allow_both_bad, max_tokens=max_tokens, graded=graded)
    if settings is not None:
        check_judge_host(settings, spec.url or "")
    return spec


def check_judge_host(settings: Settings, url: str) -> None:
    """`InvalidInput` when `ARENA_JUDGE_ALLOWED_HOSTS` is set and `url`'s host is not on it."""
    from urllib.parse import urlsplit

    allowed = settings.judge_host_list
    if not allowed:
        return
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        raise InvalidInput("judge URL: not a valid URL") from None
    if host not in allowed and f"{host}:{port}" not in allowed:
        raise InvalidInput(f"judge host {host!r} is not allowed on this server (ARENA_JUDGE_ALLOWED_HOSTS)")


def judge_api_key(settings: Settings, spec: JudgeSpec) -> str | None:
    """The key a URL judge is called with: its profile's, else `ARENA_JUDGE_API_KEY`."""
    if spec.profile:
        profile = settings.judge_profile_map.get(spec.profile)
        if profile is None:
            raise InvalidInput(f"judge profile {spec.profile!r} is no longer configured on this worker")
        return profile.get("api_key")
    return settings.judge_api_key


def parse_prompt_source(text: str) -> dict[str, Any]:
    """`pool`, `human` or `dataset:NAME[@V]` as job params (files and tasks are read by the CLI)."""
    if text in ("pool", "human"):
        return {"kind": text}
    if text.startswith("dataset:") and text.partition(":")[2]:
        return {"kind": "dataset", "ref": text.partition(":")[2]}
    raise InvalidInput(f"prompts {text!r}: expected pool, human, dataset:NAME[@VERSION], task:FILE.yaml or a prompts file")


async def start_judging(store, queue, settings: Settings, *, judge: JudgeSpec, candidates: list[str], prompts: dict[str, Any],
                        n: int = 200, concurrency: int = 4) -> Any:
    """Validate and enqueue a `judge` job; returns its `JobRecord`."""
    from service.battles import check_servable

    if n < 1:
        raise InvalidInput(f"n={n}: expected at least 1")
    if not 1 <= concurrency <= 64:
        raise InvalidInput(f"concurrency={concurrency}: expected 1 to 64 judge requests at once")
    if prompts.get("kind") != "human" and len(set(candidates)) < 2:
        raise InvalidInput("candidates: name at least two different candidates to compare")
    if len(set(candidates)) != len(candidates):
        raise InvalidInput(f"candidates: each name once, got {', '.join(candidates)}")
    await check_servable(store, settings, candidates)
    if judge.kind == "model":
        await check_servable(store, settings, [judge.model])
    if prompts.get("kind") == "dataset":
        await store.resolve_dataset(prompts["ref"])
    if prompts.get("kind") == "inline" and not prompts.get("items"):
        raise InvalidInput("prompts: the source has no prompts")
    params = {"judge": msgspec.to_builtins(judge), "candidates": candidates, "prompts": prompts, "n": n, "concurrency": concurrency}
    return await enqueue(store, queue, settings, "judge", params)


# --- the job ----------------------------------------------------------------------------


class _Item(msgspec.Struct):
    """One judgement to make: a question, a pair and its answers."""

    question: str
    model_x: str
    answer_x: str
    model_y: str
    answer_y: str
    reference: str | None = None
    category: str | None = None
    source: str | None = None
    question_id: str | None = None
    categories: list[str] | None = None  # the prompt's category tags (service.prompt_categories)


@job_handler("judge")
def judge_job(ctx: JobContext) -> dict[str, Any]:
    """Judge every (prompt, pair) of the job in both orders; log the verdicts on the judge board."""
    from service.eval_backend import shared_backend
    from service.serving import Serving

    p = ctx.params
    spec = msgspec.convert(p["judge"], JudgeSpec)
    serving = Serving(ctx.settings, ctx.store, backend=shared_backend(ctx.settings))
    judge = _make_judge(ctx, spec, serving)
    try:
        items = _items(ctx, serving, p)
        if not items:
            raise InvalidInput("nothing to judge: the prompt source gave no prompts (or no human battles between these candidates)")
        return _run(ctx, judge, items, int(p.get("concurrency", 4)))
    finally:
        close = getattr(getattr(judge, "client", None), "close", None)
        if close is not None:
            close()


def reference_judge(metric: str, *, name: str, allow_both_bad: bool) -> ReferenceJudge:
    """A judge that scores each answer against the battle's reference with the benchmark
    metric `metric` (a name of `evaluators.metrics`); with `allow_both_bad`, two answers
    scoring 0 are "both bad"."""
    from evaluators.metrics import GenerationOutcome, score_sample

    def score(answer: str, reference: str) -> float:
        return score_sample(metric, GenerationOutcome(answer, (reference,)))[0]

    return ReferenceJudge(score, name=name, both_bad_below=1e-9 if allow_both_bad else None)


def _make_judge(ctx: JobContext, spec: JudgeSpec, serving) -> Judge:
    if spec.kind == "url":
        check_judge_host(ctx.settings, spec.url or "")  # the worker's own rule, too
        client = OpenAIChatClient(spec.url, spec.model, api_key=judge_api_key(ctx.settings, spec), max_tokens=spec.max_tokens)
        return LLMJudge(client, allow_both_bad=spec.allow_both_bad, name=spec.name, graded=spec.graded)
    if spec.kind == "reference":
        return reference_judge(spec.metric, name=spec.name, allow_both_bad=spec.allow_both_bad)
    return LLMJudge(_ServingChat(ctx, serving, spec.model, spec.max_tokens), allow_both_bad=spec.allow_both_bad, name=spec.name,
                    graded=spec.graded)


class _ServingChat:
    """A `ChatClient` over this service's own generation (a candidate as the judge)."""

    def __init__(self, ctx: JobContext, serving, model: str, max_tokens: int) -> None:
        self.ctx, self.serving, self.name = ctx, serving, f"llm:{model}"
        self.model, self.max_tokens = model, max_tokens

    def complete(self, messages: list[dict[str, str]]) -> str:
        from evaluators.records import Conversation, Message
        from service.generation import GenerationParams, GenItem

        conversation = Conversation(messages=tuple(Message(m["role"], m["content"]) for m in messages))  # type: ignore[arg-type]
        params = GenerationParams(max_new_tokens=min(self.max_tokens, self.ctx.settings.max_new_tokens_cap))
        [answer] = self.ctx.call(self.serving.generate([GenItem(model=self.model, prompt=conversation, params=params)]))
        return answer.text


def _items(ctx: JobContext, serving, p: dict[str, Any]) -> list[_Item]:
    source = p["prompts"]
    candidates: list[str] = p["candidates"]
    n = int(p["n"])
    if source["kind"] == "human":
        return _human_items(ctx, set(candidates), n)
    prompts = _prompts(ctx, source)[:n]
    ctx.progress(0.0, f"generating answers of {len(candidates)} candidates to {len(prompts)} prompts")
    answers = _generate(ctx, serving, prompts, candidates)
    items = []
    for i, prompt in enumerate(prompts):
        for x, y in itertools.combinations(candidates, 2):
            items.append(_Item(prompt.text, x, answers[i][x], y, answers[i][y], prompt.reference, prompt.category, prompt.source,
                               categories=prompt.tags()))
    return items


def _prompts(ctx: JobContext, source: dict[str, Any]) -> list[ArenaPrompt]:
    from service.prompts import prompts_from_dataset

    if source["kind"] == "pool":
        return [msgspec.convert(x, ArenaPrompt) for x in ctx.call(ctx.store.prompts())]
    if source["kind"] == "dataset":
        return ctx.call(prompts_from_dataset(ctx.store, ctx.settings, source["ref"], split=source.get("split", "test")))
    if source["kind"] == "inline":
        return [msgspec.convert(x, ArenaPrompt) for x in source["items"]]
    raise InvalidInput(f"unknown prompt source {source['kind']!r}")


def _generate(ctx: JobContext, serving, prompts: list[ArenaPrompt], candidates: list[str]) -> list[dict[str, str]]:
    from service.generation import GenerationParams, GenItem

    params = GenerationParams(max_new_tokens=min(_ANSWER_TOKENS, ctx.settings.max_new_tokens_cap))
    answers: list[dict[str, str]] = [{} for _ in prompts]
    chunk = 16
    for start in range(0, len(prompts), chunk):
        ctx.check_cancelled()
        part = prompts[start : start + chunk]
        items = [GenItem(model=c, prompt=pr.conversation(), params=params) for pr in part for c in candidates]
        results = ctx.call(serving.generate(items))
        for k, gen in enumerate(results):
            answers[start + k // len(candidates)][candidates[k % len(candidates)]] = gen.text
    return answers


def _human_items(ctx: JobContext, candidates: set[str], n: int) -> list[_Item]:
    """One item per human-voted (prompt, pair), with the answers the reviewer saw."""

    async def collect() -> list[_Item]:
        excluded = await ctx.store.excluded_reviewers()
        seen: dict[str, _Item] = {}
        async for _, vote in ctx.store.iter_votes():
            if vote.get("board", "human") != "human" or vote.get("reviewer") in excluded:
                continue
            a, b, qid = vote["model_a"], vote["model_b"], vote.get("question_id")
            if qid is None or qid in seen or (candidates and not {a, b} <= candidates):
                continue
            try:
                battle = msgspec.convert(vote, Battle)
                question = battle.conversation_a[0].content  # type: ignore[index]
            except (msgspec.ValidationError, TypeError, IndexError):
                continue
            answer_a, answer_b = battle.answer_text("a"), battle.answer_text("b")
            if not isinstance(question, str) or answer_a is None or answer_b is None:
                continue
            seen[qid] = _Item(question, a, answer_a, b, answer_b, None, vote.get("category"), vote.get("source"), qid,
                              categories=vote.get("categories"))
            if len(seen) >= n:
                break
        return list(seen.values())

    return ctx.call(collect())


def _run(ctx: JobContext, judge: Judge, items: list[_Item], concurrency: int) -> dict[str, Any]:
    done = observations = logged_votes = inconsistent = complete = errors = 0
    error_samples: list[dict[str, Any]] = []
    logged: list[Battle] = []
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="judge") as pool:
        futures = {pool.submit(_judge_one, judge, item): item for item in items}
        try:
            for future in as_completed(futures):
                item, pair = futures[future], future.result()
                votes = _votes(pair, item, judge.name)
                if votes:
                    ctx.call(ctx.store.record_observations(votes, board="judge"))
                logged_votes += len(votes)
                logged.extend(pair.observations)
                observations += len(pair.observations)
                if pair.consistent is not None:
                    complete += 1
                    inconsistent += not pair.consistent
                for verdict in (pair.first, pair.second):
                    if verdict.choice is None:
                        errors += 1
                        if len(error_samples) < _ERROR_SAMPLES:
                            error_samples.append({"question_id": pair.question_id, "error": verdict.error, "reply": verdict.raw[:500]})
                done += 1
                ctx.progress(done / len(items), f"{done}/{len(items)} pairs judged, {inconsistent} inconsistent, {errors} errors")
                ctx.check_cancelled()
        except JobCancelled:
            for f in futures:
                f.cancel()
            raise
    humans = ctx.call(_human_battles(ctx))
    agree = agreement(judge_verdicts(logged), humans)  # one verdict per judgement, as MT-Bench
    return {
        "judge": judge.name,
        "judgements": done,
        "observations": observations,
        "votes": logged_votes,
        "judged_both_orders": complete,
        "inconsistent": inconsistent,
        "errors": errors,
        "error_samples": error_samples,
        "agreement_with_humans": msgspec.structs.asdict(agree),
    }


def _judge_one(judge: Judge, item: _Item) -> JudgedPair:
    return judge_both_orders(
        judge, question=item.question, model_x=item.model_x, answer_x=item.answer_x, model_y=item.model_y,
        answer_y=item.answer_y, reference=item.reference, question_id=item.question_id,
    )


def _votes(pair: JudgedPair, item: _Item, judge_name: str) -> list[dict[str, Any]]:
    """The logged form of a pair's observations: FastChat fields + which judgement and
    order each came from and whether the two orders agreed. A weighted (strong graded)
    observation is logged `weight` times, without a `weight` field: the counters count votes."""
    judgement = f"j{secrets.token_hex(8)}"
    orders = [order for order, verdict in (("first", pair.first), ("second", pair.second)) if verdict.choice is not None]
    votes = []
    for order, battle in zip(orders, pair.observations):
        vote = msgspec.to_builtins(battle)
        repeat = int(vote.pop("weight", None) or 1)
        vote.update(reviewer=judge_name, judgement=judgement, order=order, category=item.category, source=item.source,
                    categories=item.categories or None, consistent=pair.consistent)
        votes.extend([{k: v for k, v in vote.items() if v is not None}] * repeat)
    return votes


async def _human_battles(ctx: JobContext) -> list[Battle]:
    excluded = await ctx.store.excluded_reviewers()
    out = []
    async for _, vote in ctx.store.iter_votes():
        if vote.get("board", "human") == "human" and vote.get("reviewer") not in excluded and vote.get("question_id"):
            out.append(Battle(model_a=vote["model_a"], model_b=vote["model_b"], winner=vote["winner"], question_id=vote["question_id"]))
    return out
