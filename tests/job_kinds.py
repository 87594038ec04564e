"""Job kinds used only by the job-system tests (loaded by workers through ARENA_JOB_MODULES)."""

from __future__ import annotations

import time

from service.jobs import JobContext, job_handler


@job_handler("test.count")
def count(ctx: JobContext) -> dict:
    """Counts to `n`, `delay` seconds a step, reporting progress and honouring cancel.

    Each finished step is recorded in a file under `ctx.params["dir"]`, so a test can see
    where an attempt stopped and that a retried attempt resumed (idempotence).
    """
    from pathlib import Path

    n, delay = int(ctx.params["n"]), float(ctx.params.get("delay", 0.1))
    marker = Path(ctx.params["dir"]) / f"{ctx.job_id}.steps"
    done = int(marker.read_text()) if marker.exists() else 0
    for step in range(done, n):
        ctx.check_cancelled()
        time.sleep(delay)
        marker.write_text(str(step + 1))
        ctx.progress((step + 1) / n, f"step {step + 1}/{n}", step=step + 1)
    return {"counted": n, "resumed_from": done, "attempt": ctx.attempt}


@job_handler("test.fail")
def fail(ctx: JobContext) -> dict:
    raise ValueError(f"planned failure with {ctx.params}")
