"""The judge board's calibration against people, computed in the background, served as stored.

`arena.calibration.calibrate_judges` needs the battles themselves (the items for agreement,
the answers' lengths for the length coefficient), not the boards' aggregates, so a request
never computes it:

- the API process's refresher (`run`, every `ARENA_CALIBRATION_REFRESH_S` seconds) reads
  the votes counted per board (one cheap read) and, when at least
  `ARENA_CALIBRATION_MIN_VOTES` were counted since the stored calibration (or none is
  stored and the judge board has verdicts), queues a `judge-calibration` job, unless the
  last one is still queued or running or ended less than `ARENA_CALIBRATION_MIN_INTERVAL_S`
  ago; which job is the last is claimed atomically in the store, so several API processes
  queue one job between them;
- the job (`calibration_job`, on a worker) reads the votes log once, keeping of each vote
  only what calibration reads (the answers' token counts, not their text), runs
  `calibrate_judges` and stores the report with its time and the vote counts it saw;
- `calibration_view` (the page, `/api/judges/calibration`) returns the stored report, or
  `status: "not_computed"` before the first one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
from redis import exceptions as redis_errors

from service.errors import stop_if_cancelled
from service.jobs import JobContext, job_handler

log = logging.getLogger("arena.calibration")

KIND = "judge-calibration"
# A claimed job whose record is not there yet is being written by the process that claimed
# it; after this long without a record, that process died between the two steps.
CLAIM_GRACE_S = 60.0
NOT_COMPUTED = "not computed yet: the background job runs once the judge board has verdicts"


class StoredCalibration(msgspec.Struct, kw_only=True):
    """What the job stores: `report` is `arena.calibration.Calibration` as plain data."""

    computed_at: float
    votes: dict[str, int]  # votes counted per board when the job read the log
    bootstrap_rounds: int
    report: dict[str, Any]


async def calibration_view(store) -> dict[str, Any]:
    """The last stored calibration for the page and the API (never computes): `status`
    "ready" with `computed_at` (Unix time), `votes`, `human_agreement`, `judges` (each
    with `below_human`) and the rule; or "not_computed" with a message."""
    raw = await store.judge_calibration()
    if raw is None:
        return {"status": "not_computed", "message": NOT_COMPUTED, "computed_at": None, "votes": None, "judges": []}
    stored = msgspec.json.decode(raw, type=StoredCalibration)
    report = stored.report
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stored.computed_at))
    return {"status": "ready", "computed_at": stored.computed_at, "computed_at_text": when, "votes": stored.votes,
            "bootstrap_rounds": stored.bootstrap_rounds, "human_agreement": report["human_agreement"],
            "human_votes": report["human_votes"], "level": report["level"], "rule": report["rule"],
            "judges": report["judges"]}


async def needs_refresh(store, min_votes: int) -> bool:
    """Whether enough votes were counted since the stored calibration to compute it again."""
    counted = (await store.aggregate_summary()).votes
    if counted.get("judge", 0) == 0:
        return False  # no judge to calibrate
    raw = await store.judge_calibration()
    if raw is None:
        return True
    seen = msgspec.json.decode(raw, type=StoredCalibration).votes
    changed = sum(abs(counted.get(b, 0) - seen.get(b, 0)) for b in ("human", "judge"))
    return changed >= max(1, min_votes)


async def queue_if_stale(store, queue, settings) -> str | None:
    """Queue a calibration job when one is due; its id, or None. Of any number of API
    processes calling this at once, one queues (the store's claim is atomic); none queues
    while the last job is queued or running, nor within `calibration_min_interval_s` of its
    end, nor again on the very votes the last one failed on."""
    import secrets

    from service.domain import TERMINAL
    from service.errors import NotFound
    from service.jobs import enqueue

    if not await needs_refresh(store, settings.calibration_min_votes):
        return None
    claim = await store.calibration_claim()
    counted = dict((await store.aggregate_summary()).votes)
    if claim is not None:
        try:
            last = await store.get_job(claim.job_id)
        except NotFound:
            last = None
        if last is None:
            if time.time() - claim.claimed_at < CLAIM_GRACE_S:
                return None  # another process claimed it and is writing the job right now
        elif last.status not in TERMINAL:
            return None  # queued or running
        elif time.time() - (last.finished_at or 0) < settings.calibration_min_interval_s:
            return None
        elif last.status == "failed" and last.params.get("votes") == counted:
            return None  # it failed on these very votes: wait for new ones rather than fail again every interval
    job_id = f"job_{secrets.token_hex(8)}"
    if not await store.claim_calibration(job_id, replacing=claim):
        return None  # another API process queued it first
    job = await enqueue(store, queue, settings, KIND, {"bootstrap": settings.board_bootstrap, "votes": counted},
                        job_id=job_id)
    return job.id


async def run(store, queue, settings) -> None:
    """Check every `calibration_refresh_s` seconds until cancelled (the app's lifespan starts
    this); failures are logged and retried next time."""
    while True:
        try:
            job_id = await queue_if_stale(store, queue, settings)
            if job_id:
                log.info("queued judge calibration %s", job_id)
        except asyncio.CancelledError:
            raise
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            stop_if_cancelled()
            log.warning("judge calibration: the store is unreachable (%s); serving the last one", exc)
        except Exception:
            stop_if_cancelled()
            log.exception("judge calibration: queueing failed; serving the last one")
        stop_if_cancelled()
        await asyncio.sleep(settings.calibration_refresh_s)


async def calibration_battles(store) -> tuple[dict[str, int], list]:
    """The votes counted per board and the battles calibration reads (excluded reviewers'
    votes left out, as on the boards): every judge verdict, and the human votes with a
    question (agreement is measured per question); the answers' text is dropped once their
    token counts are in `conv_metadata`, so memory does not grow with the answers."""
    from service.battles import to_battle

    counted = (await store.aggregate_summary()).votes
    excluded = await store.excluded_reviewers()
    out = []
    async for _, vote in store.iter_votes():
        board = vote.get("board", "human")
        if vote.get("reviewer") in excluded or (board == "human" and vote.get("question_id") is None):
            continue
        battle = to_battle(vote)
        out.append(msgspec.structs.replace(battle, conversation_a=None, conversation_b=None,
                                              answer_a=None, answer_b=None))
    return dict(counted), out


@job_handler(KIND)
def calibration_job(ctx: JobContext) -> dict[str, Any]:
    """Compute every judge's calibration from the log and store it (see the module doc)."""
    from arena.calibration import calibrate_judges

    rounds = int(ctx.params.get("bootstrap", 500))
    ctx.progress(0.05, "reading the votes log")
    counted, battles = ctx.call(calibration_battles(ctx.store))
    ctx.check_cancelled()
    ctx.progress(0.3, f"calibrating on {len(battles)} battles")
    report = calibrate_judges(battles, bootstrap=rounds, seed=0)
    stored = StoredCalibration(computed_at=time.time(), votes=counted, bootstrap_rounds=rounds,
                               report=msgspec.to_builtins(report))
    ctx.call(ctx.store.save_judge_calibration(msgspec.json.encode(stored)))
    return {"judges": len(report.judges), "below_human": [j.judge for j in report.judges if j.below_human],
            "battles": len(battles), "votes": counted}
