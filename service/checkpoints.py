"""A run's checkpoints on disk: which are complete, the newest to resume from, and the
bounded, evenly spread set that data attribution reads.

Trainer saves a checkpoint (adapter weights, optimizer and scheduler state) every
`save_steps` or once per epoch: that is what a restarted worker resumes from. Attribution
needs far fewer: TracIn/LESS sum over a handful of checkpoints spread over training, and
each kept checkpoint costs one gradient pass over the training set per trace and one
feature file per record set. A run with at most n regular saves (e.g. one per epoch for
up to n epochs) keeps them all. A longer one keeps n: `service.train_progress.SpreadCheckpoints`
(a Trainer callback, there so that reading checkpoints never imports transformers) makes Trainer
also save at the steps `ceil(k · max_steps / n)`, k = 1..n, and after every save removes
any checkpoint that is neither one of those nor the newest, so the run holds at most
n + 1 checkpoints while it trains and n when it is done.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import msgspec

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class CheckpointInfo(msgspec.Struct, frozen=True):
    """A saved checkpoint: adapter weights plus optimizer/scheduler/RNG state at `step`."""

    step: int
    path: str


def checkpoint_complete(path: Path) -> bool:
    # Trainer writes trainer_state.json after weights, optimizer and RNG state.
    return (path / "trainer_state.json").is_file() and (path / "adapter_model.safetensors").is_file()


def complete_checkpoints(checkpoints_dir: Path) -> list[CheckpointInfo]:
    """Complete checkpoints under `checkpoints_dir`, by step."""
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for child in checkpoints_dir.iterdir():
        match = CHECKPOINT_RE.match(child.name)
        if match and child.is_dir() and checkpoint_complete(child):
            found.append(CheckpointInfo(step=int(match.group(1)), path=str(child)))
    return sorted(found, key=lambda c: c.step)


def last_complete_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete checkpoint; incomplete ones (a worker killed mid-save) are removed,
    since training will write that step again."""
    if not checkpoints_dir.is_dir():
        return None
    for child in checkpoints_dir.iterdir():
        if CHECKPOINT_RE.match(child.name) and child.is_dir() and not checkpoint_complete(child):
            shutil.rmtree(child, ignore_errors=True)
    complete = complete_checkpoints(checkpoints_dir)
    return Path(complete[-1].path) if complete else None


def spread_steps(max_steps: int, n: int) -> list[int]:
    """The `n` (or fewer, when training is shorter) steps spread evenly over `max_steps`,
    the last step among them."""
    return sorted({max(1, math.ceil(k * max_steps / n)) for k in range(1, n + 1)})


def spread(items: list, n: int) -> list:
    """At most `n` of `items`, picked at the positions `spread_steps` picks among steps
    1..len(items): evenly spread, ending with the last (a trace over an older run that kept
    every checkpoint uses these)."""
    if len(items) <= n:
        return list(items)
    return [items[position - 1] for position in spread_steps(len(items), n)]


def attribution_steps(max_steps: int, save_steps: int, n: int) -> list[int]:
    """The steps whose checkpoints a run keeps for attribution: its regular saves (every
    `save_steps`, and the last step) when there are at most `n` of them, as LESS keeps
    its epoch checkpoints; else `spread_steps(max_steps, n)`."""
    regular = sorted({*range(save_steps, max_steps + 1, save_steps), max_steps})
    return regular if len(regular) <= n else spread_steps(max_steps, n)
