"""The judges' calibration as last computed (`service.judge_calibration`): one JSON value,
and which calibration job was queued last, claimed atomically so that several API processes
queue one job between them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

# Compare-and-set: the claim goes to the caller only when the key still holds what the
# caller saw (nothing, or the job it saw end), so of two processes that saw the same state
# exactly one wins.
_CLAIM_LUA = """
local current = redis.call('GET', KEYS[1])
if (ARGV[2] == '' and not current) or (current and current == ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class CalibrationClaim:
    """The calibration job queued last: its id, when it was claimed (Unix time), and the
    stored form (`raw`) that a later claim compares against."""

    job_id: str
    claimed_at: float
    raw: str

    @classmethod
    def parse(cls, raw: str) -> CalibrationClaim:
        job_id, _, at = raw.partition(" ")
        return cls(job_id=job_id, claimed_at=float(at or 0), raw=raw)


class CalibrationStore:
    redis: Any
    keys: Any

    async def judge_calibration(self) -> bytes | None:
        """The stored calibration (JSON), or None before the first one."""
        return await self.redis.get(self.keys.judge_calibration)

    async def save_judge_calibration(self, payload: bytes) -> None:
        await self.redis.set(self.keys.judge_calibration, payload)

    async def calibration_claim(self) -> CalibrationClaim | None:
        """The calibration job queued last (by any process), or None before the first."""
        raw = await self.redis.get(self.keys.judge_calibration_job)
        return CalibrationClaim.parse(raw.decode()) if raw is not None else None

    async def claim_calibration(self, job_id: str, replacing: CalibrationClaim | None) -> bool:
        """Make `job_id` the calibration job, atomically: only when the claim is still
        `replacing` (what the caller read: None, or a job it saw end). False when another
        process claimed it in between; the caller then queues nothing."""
        if getattr(self, "_claim_script", None) is None:
            self._claim_script = self.redis.register_script(_CLAIM_LUA)
        new = f"{job_id} {time.time():.3f}"
        won = await self._claim_script(keys=[self.keys.judge_calibration_job],
                                       args=[new, replacing.raw if replacing is not None else ""])
        return bool(won)
