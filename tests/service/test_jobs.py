"""The job system with real worker processes on a real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from service import jobs
from service.store import SyncStore
from tests.redis_fixtures import settings_env


def start_worker(settings, *extra_env: tuple[str, str]) -> subprocess.Popen:
    env = settings_env(settings)
    env["ARENA_JOB_MODULES"] = "tests.job_kinds"
    env.update(dict(extra_env))
    return subprocess.Popen([sys.executable, "-m", "service.cli.__main__", "worker"], env=env, cwd=os.getcwd(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
def store(settings):
    s = SyncStore(settings.redis_url, settings.key_prefix)
    yield s
    s.close()


def enqueue(store: SyncStore, settings, kind: str, **params):
    async def go():
        queue = jobs.make_queue(settings.redis_url, settings)
        try:
            return await jobs.enqueue(store.store, queue, settings, kind, params)
        finally:
            await queue.disconnect()

    return store._run(go())


def cancel(store: SyncStore, settings, job_id: str):
    async def go():
        queue = jobs.make_queue(settings.redis_url, settings)
        try:
            return await jobs.cancel(store.store, queue, job_id)
        finally:
            await queue.disconnect()

    return store._run(go())


def wait_for(store, job_id, statuses, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get_job(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {store.get_job(job_id).status} after {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_job_runs_reports_progress_and_succeeds(settings, store, tmp_path):
    worker = start_worker(settings)
    try:
        job = enqueue(store, settings, "test.count", n=5, delay=0.05, dir=str(tmp_path))
        assert job.status == "queued"
        done = wait_for(store, job.id, {"succeeded", "failed"})
        assert done.status == "succeeded", done.error
        assert done.result == {"counted": 5, "resumed_from": 0, "attempt": 1}
        events = [e for _, e in store.read_job_events(job.id)]
        assert [e["step"] for e in events if e.get("type") == "progress"] == [1, 2, 3, 4, 5]
        assert events[-1] == {"type": "status", "status": "succeeded"}
    finally:
        stop(worker)


def test_failure_has_a_reason(settings, store, tmp_path):
    worker = start_worker(settings)
    try:
        job = enqueue(store, settings, "test.fail", x=1)
        done = wait_for(store, job.id, {"failed", "succeeded"})
        assert done.status == "failed"
        assert "planned failure" in done.error
    finally:
        stop(worker)


def test_cancel_queued_and_running(settings, store, tmp_path):
    queued = enqueue(store, settings, "test.count", n=3, delay=0.01, dir=str(tmp_path))
    assert cancel(store, settings, queued.id).status == "cancelled"
    worker = start_worker(settings)
    try:
        running = enqueue(store, settings, "test.count", n=200, delay=0.05, dir=str(tmp_path))
        wait_for(store, running.id, {"running"})
        time.sleep(0.3)
        cancel(store, settings, running.id)
        done = wait_for(store, running.id, {"cancelled", "succeeded", "failed"}, timeout=30)
        assert done.status == "cancelled"
        steps = int((tmp_path / f"{running.id}.steps").read_text())
        assert steps < 200
        time.sleep(0.5)
        assert store.get_job(queued.id).status == "cancelled"  # never ran
        assert not (tmp_path / f"{queued.id}.steps").exists()
    finally:
        stop(worker)


def test_sigkilled_worker_job_is_retried_and_resumes(settings, store, tmp_path):
    victim = start_worker(settings)
    job = enqueue(store, settings, "test.count", n=40, delay=0.1, dir=str(tmp_path))
    try:
        wait_for(store, job.id, {"running"})
        while not (tmp_path / f"{job.id}.steps").exists():
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    assert store.get_job(job.id).status == "running"  # the record cannot know yet
    rescuer = start_worker(settings)
    try:
        done = wait_for(store, job.id, {"succeeded", "failed"}, timeout=90)
        assert done.status == "succeeded", done.error
        assert done.attempts == 2
        assert done.result["resumed_from"] > 0  # the second attempt continued, not restarted
    finally:
        stop(rescuer)


def test_sigkilled_worker_without_retries_fails_with_reason(settings, store, tmp_path):
    from msgspec.structs import replace

    no_retry = replace(settings, job_retries=1)
    victim = start_worker(no_retry)
    job = enqueue(store, no_retry, "test.count", n=100, delay=0.1, dir=str(tmp_path))
    try:
        wait_for(store, job.id, {"running"})
        time.sleep(0.5)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    observer = start_worker(no_retry)
    try:
        t0 = time.monotonic()
        done = wait_for(store, job.id, {"failed", "succeeded"}, timeout=60)
        assert done.status == "failed"
        assert "stopped responding" in done.error
        assert time.monotonic() - t0 < 30
    finally:
        stop(observer)


def test_job_orphaned_by_saq_is_requeued_and_finishes(settings, store, tmp_path):
    """SAQ's sweep can abort a job in the instant between a worker dequeuing it and marking
    it active, leaving it ABORTING in no list: no sweep looks at it again. Our record sweep
    must notice (record `running`, heartbeat stale, SAQ holding it nowhere) and re-queue it."""
    from saq.job import Status as SaqStatus

    job = enqueue(store, settings, "test.count", n=3, delay=0.01, dir=str(tmp_path))

    async def orphan():
        queue = jobs.make_queue(settings.redis_url, settings)
        try:
            await queue.redis.lmove(queue._queued, queue._active, "LEFT", "RIGHT")  # a worker's dequeue
            saq_job = await queue.job(job.id)
            await queue.abort(saq_job, "swept")  # what the racing sweep does: ABORTING, off both lists
            return (await queue.job(job.id)).status
        finally:
            await queue.disconnect()

    assert store._run(orphan()) == SaqStatus.ABORTING
    store._run(store.store.update_job(job.id, status="running", attempts=1, worker="gone", heartbeat_at=time.time() - 60))
    worker = start_worker(settings)
    try:
        done = wait_for(store, job.id, {"succeeded", "failed"}, timeout=60)
        assert done.status == "succeeded", done.error
        assert done.attempts == 2
    finally:
        stop(worker)


def test_cancel_from_the_cli(settings, store, tmp_path):
    """`arena jobs cancel` and `arena runs cancel` as a user types them (both were a
    TypeError traceback; only the API's DELETE worked)."""
    env = settings_env(settings)
    for command in ("jobs", "runs"):
        queued = enqueue(store, settings, "test.count", n=3, delay=0.01, dir=str(tmp_path))
        done = subprocess.run([sys.executable, "-m", "service.cli.__main__", command, "cancel", queued.id], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == f"{queued.id}: cancelled", done.stderr
        assert store.get_job(queued.id).status == "cancelled"
        again = subprocess.run([sys.executable, "-m", "service.cli.__main__", command, "cancel", queued.id], env=env,
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 1 and again.stderr == f"error: job {queued.id} already cancelled\n"
