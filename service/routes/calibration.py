"""The judges' calibration against the human votes, as last computed in the background."""

from __future__ import annotations

from litestar import get

from service import judge_calibration
from service.store import Store


@get("/api/judges/calibration", summary="Per judge: agreement with humans (95% CI), order flips, length coefficient, "
                                        "self-preference and the 'below human agreement' mark; as last computed")
async def get_judge_calibration(store: Store) -> dict:
    """The stored calibration with `computed_at` and the `votes` it was computed on, or
    `status: "not_computed"`; a background job recomputes it as votes arrive, never this request."""
    return await judge_calibration.calibration_view(store)
