"""The judges' calibration as last computed (`service.judge_calibration`): one JSON value."""

from __future__ import annotations

from typing import Any


class CalibrationStore:
    redis: Any
    keys: Any

    async def judge_calibration(self) -> bytes | None:
        """The stored calibration (JSON), or None before the first one."""
        return await self.redis.get(self.keys.judge_calibration)

    async def save_judge_calibration(self, payload: bytes) -> None:
        await self.redis.set(self.keys.judge_calibration, payload)
