"""What a training run reports while it runs: the loss curve, progress to a callback,
cancellation within a step, and a NaN loss caught at its step; and the Trainer callback
that keeps the attribution checkpoints (`SpreadCheckpoints`, see `service.checkpoints`)."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from service.checkpoints import CHECKPOINT_RE, attribution_steps
from service.train_config import LossPoint, TrainingCancelled, TrainingDiverged


def loss_curve(log_history: list[dict[str, Any]]) -> list[LossPoint]:
    """Train and eval logs merged per step (the Trainer logs them as separate entries)."""
    points: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        if "loss" not in entry and "eval_loss" not in entry:
            continue
        point = points.setdefault(entry["step"], {"epoch": entry.get("epoch", 0.0)})
        if "loss" in entry:
            point["loss"] = float(entry["loss"])
            point["lr"] = entry.get("learning_rate")
        if "eval_loss" in entry:
            point["eval_loss"] = float(entry["eval_loss"])
    return [
        LossPoint(step=step, epoch=float(p["epoch"]), loss=p.get("loss"), eval_loss=p.get("eval_loss"), lr=p.get("lr"))
        for step, p in sorted(points.items())
    ]


class ProgressCallback(TrainerCallback):
    """Reports logging steps to `on_log`, polls `should_stop`, and catches a NaN loss at its step."""

    def __init__(
        self,
        on_log: Callable[[dict[str, Any]], None] | None,
        should_stop: Callable[[], bool] | None,
        *,
        has_eval: bool,
    ) -> None:
        self.on_log_fn = on_log
        self.should_stop = should_stop
        self.has_eval = has_eval
        self.pending: dict[str, Any] | None = None
        self.tokens_at_start = 0
        self.trainable: list[torch.nn.Parameter] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.tokens_at_start = state.num_input_tokens_seen
        self.trainable = [p for p in model.parameters() if p.requires_grad]

    def on_step_begin(self, args, state, control, **kwargs):
        if self.should_stop is not None and self.should_stop():
            raise TrainingCancelled(f"training cancelled at step {state.global_step} of {state.max_steps}")

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        # A NaN loss makes every gradient NaN: stop before the optimizer spreads it into the
        # weights. One sum per tensor, over the adapter's few tensors only (~1% of a step).
        grads = [p.grad for p in self.trainable if p.grad is not None]
        if grads and not bool(torch.isfinite(torch.stack([g.detach().float().sum() for g in grads])).all()):
            step = state.global_step + 1
            raise TrainingDiverged(
                f"the loss or its gradient became NaN or infinite at step {step} of {state.max_steps}; "
                "lower lr or check the records for extreme inputs",
                step=step,
            )

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True  # the curve always ends at the last step
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        for key in ("loss", "eval_loss"):
            value = logs.get(key)
            if value is not None and not math.isfinite(value):
                raise TrainingDiverged(f"the {key} is {value} at step {state.global_step}", step=state.global_step)
        if self.on_log_fn is None:
            return
        if "loss" in logs:
            point = {
                "step": state.global_step,
                "max_steps": state.max_steps,
                "loss": float(logs["loss"]),
                "eval_loss": None,
                "lr": logs.get("learning_rate"),
                "epoch": float(logs.get("epoch", state.epoch or 0.0)),
            }
            if self.has_eval and control.should_evaluate:
                self.pending = point  # the eval loss for this step is logged next
            else:
                self.on_log_fn(point)
        elif "eval_loss" in logs:
            point = self.pending or {
                "step": state.global_step,
                "max_steps": state.max_steps,
                "loss": None,
                "lr": None,
                "epoch": float(logs.get("epoch", state.epoch or 0.0)),
            }
            self.pending = None
            self.on_log_fn({**point, "eval_loss": float(logs["eval_loss"])})


class SpreadCheckpoints(TrainerCallback):
    """Save at `spread_steps(max_steps, n)` too, and keep only those and the newest save."""

    def __init__(self, n: int, checkpoints_dir: Path) -> None:
        self.n, self.dir, self.targets = n, Path(checkpoints_dir), set()

    def on_train_begin(self, args, state, control, **kwargs):
        self.targets = set(attribution_steps(state.max_steps, int(args.save_steps), self.n))

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.targets:
            control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):
        # Called after the checkpoint of `global_step` is written: older saves that are
        # not attribution targets served only resuming, which the new one now does.
        if self.dir.is_dir():
            for child in self.dir.iterdir():
                match = CHECKPOINT_RE.match(child.name)
                if match and int(match.group(1)) not in self.targets and int(match.group(1)) != state.global_step:
                    shutil.rmtree(child, ignore_errors=True)
        return control
