"""A training run's settings, its result and its errors: what `service.training` takes and
returns, and what the run's `metrics.json` holds."""

from __future__ import annotations

import math
from typing import Any, Literal

import msgspec

from service.checkpoints import CheckpointInfo
from service.errors import ArenaError, Conflict, InvalidInput


# --- errors -------------------------------------------------------------------------------


class TrainingError(ArenaError):
    """A training run could not produce an adapter; the message says why."""

    status = 422


class InvalidTrainingInput(TrainingError, InvalidInput):
    """The records or the config cannot be trained on (bad value, too little data, unknown module)."""


class TrainingDiverged(TrainingError):
    """The loss became NaN or infinite; `extra["step"]` is the step where it did."""


class TrainingCancelled(TrainingError):
    """`should_stop()` asked to stop; no adapter was written (checkpoints already saved stay)."""

    status = 409


class RunConflict(TrainingError, Conflict):
    """`out_dir` already holds checkpoints of a different run (other data, base or config)."""

    status = 409


# --- config and result --------------------------------------------------------------------


class TrainConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """LoRA and optimisation settings for one run. Stored verbatim in the run's metrics.

    `target_modules` is a comma-separated list of module names ("q_proj,v_proj") or
    "all-linear". `save_steps=None` saves a checkpoint at the end of every epoch;
    the last step is always saved. `attribution_checkpoints` (default 5) bounds what a
    finished run keeps: that many checkpoints with their optimizer state, spread evenly
    over training (LESS's epoch checkpoints), which is what data attribution reads; the
    other saves only serve resuming and are removed once a newer one exists. With
    `attribution_checkpoints` 0 or null every checkpoint is kept, or the newest
    `save_total_limit` of them: a run that sets `save_total_limit` uses Trainer's rule
    instead (runs from before the bound stored it without `attribution_checkpoints`, so
    the two are not refused together here but by `check_request`, for new runs only). `eval_fraction` of the records (rounded down) is
    held out, chosen by `seed`; with none held out there is no eval loss.

    `packing` lays out each batch of `batch_size` records (see `service.packing`):
    "packed" (padding-free rows, per-sequence position ids, no attention across records),
    "grouped" (padded batches of similar lengths), "padded", or "auto" (packed when the
    base's attention keeps packed records apart, checked on the loaded model; else grouped
    when lengths vary enough; else padded). Packed and padded runs take the same steps on
    the same batches, so their loss agrees to float rounding (with `lora_dropout` 0: dropout
    draws its masks over differently shaped tensors); grouped changes which records share
    a batch.
    """

    lora_r: int = 16
    lora_alpha: float = 32
    lora_dropout: float = 0.05
    target_modules: str = "q_proj,v_proj"
    lr: float = 2e-4
    epochs: float = 3
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    seed: int = 0
    eval_fraction: float = 0.1
    logging_steps: int = 10
    save_steps: int | None = None
    save_total_limit: int | None = None
    attribution_checkpoints: int | None = 5
    warmup_steps: int = 0
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    packing: Literal["auto", "padded", "packed", "grouped"] = "auto"

    def __post_init__(self) -> None:
        positive_ints = ("lora_r", "batch_size", "grad_accum", "max_length", "logging_steps")
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise InvalidTrainingInput(f"config.{name}={getattr(self, name)}: expected an integer >= 1")
        for name in ("max_steps", "save_steps", "save_total_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidTrainingInput(f"config.{name}={value}: expected an integer >= 1 or null")
        if self.attribution_checkpoints is not None and self.attribution_checkpoints < 0:
            raise InvalidTrainingInput(
                f"config.attribution_checkpoints={self.attribution_checkpoints}: "
                "expected an integer >= 0 (0 or null keeps every checkpoint)"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InvalidTrainingInput(f"config.lr={self.lr}: expected a positive number")
        if not self.epochs > 0:
            raise InvalidTrainingInput(f"config.epochs={self.epochs}: expected a positive number")
        if not 0 <= self.lora_dropout < 1:
            raise InvalidTrainingInput(f"config.lora_dropout={self.lora_dropout}: expected 0 <= value < 1")
        if not 0 <= self.eval_fraction < 1:
            raise InvalidTrainingInput(f"config.eval_fraction={self.eval_fraction}: expected 0 <= value < 1")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise InvalidTrainingInput(
                "config.warmup_steps and config.weight_decay must be >= 0 and config.max_grad_norm > 0"
            )
        if self.packing not in ("auto", "padded", "packed", "grouped"):
            raise InvalidTrainingInput(
                f"config.packing={self.packing!r}: expected 'auto', 'packed', 'grouped' or 'padded'"
            )
        if not self.module_names:
            raise InvalidTrainingInput(
                f"config.target_modules={self.target_modules!r}: expected module names or 'all-linear'"
            )

    @staticmethod
    def check_request(config: dict[str, Any]) -> None:
        """Refuse what a NEW run's request may not combine (stored configs are not re-judged):
        `save_total_limit` keeps the newest checkpoints, `attribution_checkpoints` keeps
        ones spread over training; asking for both is ambiguous."""
        if config.get("save_total_limit") is not None and config.get("attribution_checkpoints"):
            raise InvalidTrainingInput(
                "config.save_total_limit and config.attribution_checkpoints both bound the checkpoints kept; "
                "give save_total_limit only with attribution_checkpoints=0 (keep every checkpoint)"
            )

    @property
    def attribution_limit(self) -> int | None:
        """How many spread checkpoints the run keeps for attribution; None keeps every one
        (or Trainer's newest `save_total_limit`)."""
        if self.save_total_limit is not None or not self.attribution_checkpoints:
            return None
        return self.attribution_checkpoints

    @property
    def module_names(self) -> list[str]:
        """`target_modules` as a list ("all-linear" stays a single entry)."""
        return [name.strip() for name in self.target_modules.split(",") if name.strip()]


class LossPoint(msgspec.Struct, frozen=True):
    """One logging step of the loss curve. `eval_loss` is None on steps without evaluation."""

    step: int
    epoch: float
    loss: float | None
    eval_loss: float | None
    lr: float | None


class TrainResult(msgspec.Struct, kw_only=True, frozen=True):
    """What a finished run produced and how it went; `out_dir/metrics.json` holds the same.

    `tokens_per_s` is non-padding tokens (prompt and answer) over `train_s`, the wall time
    of the training loop; `train_cpu_s` is that loop's process CPU time (a steadier
    measure on a shared machine). `resumed_from` names the checkpoint a rerun continued;
    `packing` the batch layout it used ("auto" resolved; runs from before packing padded).
    """

    out_dir: str
    adapter_dir: str
    base_dir: str
    config: TrainConfig
    data_sha256: str
    global_step: int
    max_steps: int
    epochs: float
    loss_curve: list[LossPoint]
    final_loss: float | None
    final_eval_loss: float | None
    checkpoints: list[CheckpointInfo]
    train_indices: list[int]
    eval_indices: list[int]
    skipped_indices: list[int]
    target_modules: list[str]
    trainable_params: int
    total_params: int
    train_tokens: int
    wall_s: float
    train_s: float
    train_cpu_s: float
    tokens_per_s: float
    resumed_from: str | None = None
    packing: Literal["padded", "packed", "grouped"] = "padded"


class _RunIdentity(msgspec.Struct, frozen=True):
    """What makes two calls the same run (so resuming one from the other's checkpoints is sound)."""

    base_dir: str
    data_sha256: str
    config: TrainConfig


