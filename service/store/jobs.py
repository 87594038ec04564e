"""Job records, their progress events and cancel flags."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from service.domain import JobRecord
from service.errors import NotFound

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(JobRecord)


class JobStore:
    redis: object
    keys: object

    async def create_job(self, job: JobRecord) -> JobRecord:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.job(job.id), _enc.encode(job))
            pipe.zadd(self.keys.jobs, {job.id: job.created_at})
            await pipe.execute()
        return job

    async def get_job(self, job_id: str) -> JobRecord:
        raw = await self.redis.get(self.keys.job(job_id))
        if raw is None:
            raise NotFound(f"no job {job_id!r}")
        return _dec.decode(raw)

    async def list_jobs(self, limit: int = 50, kind: str | None = None) -> list[JobRecord]:
        ids = await self.redis.zrevrange(self.keys.jobs, 0, max(limit * 4, limit) - 1)
        out: list[JobRecord] = []
        for raw in await self.redis.mget([self.keys.job(i.decode()) for i in ids]) if ids else []:
            if raw is None:
                continue
            job = _dec.decode(raw)
            if kind is None or job.kind == kind:
                out.append(job)
            if len(out) >= limit:
                break
        return out

    async def update_job(self, job_id: str, *, only_if: set[str] | None = None, **fields: Any) -> JobRecord | None:
        """Atomically update fields. With `only_if`, apply only when the current status is in it;
        returns None when it was not."""
        key = self.keys.job(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise NotFound(f"no job {job_id!r}")
                    job = _dec.decode(raw)
                    if only_if is not None and job.status not in only_if:
                        await pipe.reset()
                        return None
                    job = msgspec.structs.replace(job, **fields)
                    pipe.multi()
                    pipe.set(key, _enc.encode(job))
                    await pipe.execute()
                    return job
                except Exception as exc:
                    if type(exc).__name__ != "WatchError":
                        raise

    async def add_job_event(self, job_id: str, event: dict[str, Any]) -> str:
        """Append a progress event (the SSE feed and CLI progress bars read these)."""
        return (
            await self.redis.xadd(self.keys.job_events(job_id), {"data": _enc.encode(event)}, maxlen=20000, approximate=True)
        ).decode()

    async def read_job_events(self, job_id: str, after: str = "0", block_ms: int | None = None, count: int = 500) -> list[tuple[str, dict]]:
        """Events after stream id `after` (blocking up to `block_ms` when none yet)."""
        res = await self.redis.xread({self.keys.job_events(job_id): after}, count=count, block=block_ms)
        out: list[tuple[str, dict]] = []
        for _stream, entries in res or []:
            for entry_id, fields in entries:
                out.append((entry_id.decode(), msgspec.json.decode(fields[b"data"])))
        return out

    async def request_cancel(self, job_id: str) -> None:
        await self.redis.set(self.keys.job_cancel(job_id), 1, ex=7 * 86400)

    async def cancel_requested(self, job_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.job_cancel(job_id)))

    async def worker_heartbeat(self, worker_id: str) -> None:
        await self.redis.hset(self.keys.workers, worker_id, time.time())

    async def worker_gone(self, worker_id: str) -> None:
        await self.redis.hdel(self.keys.workers, worker_id)

    async def live_workers(self, within_s: float = 60.0) -> list[str]:
        now = time.time()
        return [w.decode() for w, ts in (await self.redis.hgetall(self.keys.workers)).items() if now - float(ts) < within_s]
