"""Small-model fixtures, shared by every test that needs a real model directory.

- `tiny_base`: the "test"-size offline base (a few seconds to build), built once and
  cached under `~/.cache/adapter-arena-tests` (or `$ARENA_TEST_CACHE`), keyed by the
  builder's recipe version, so reruns start at once.
- `tiny_small_base`: the "small" base (what `arena base tiny` builds; ~1 min the first
  time, cached the same way) for tests that need a base able to learn a task.
- `trained_adapter`: a `TrainResult` of a short LoRA run on `tiny_base` (a few
  seconds, per session), with its adapter, checkpoints and metrics on disk.
- `word_task_records`: the factory behind it, for tests that want their own data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.models.corpus import word_task
from service.models.tiny import BUILDER_VERSION, build_tiny_base
from service.training import TrainConfig, TrainResult, train_adapter


def _cache_root() -> Path:
    root = Path(os.environ.get("ARENA_TEST_CACHE") or Path.home() / ".cache" / "adapter-arena-tests")
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def tiny_base() -> Path:
    """Path to the cached "test"-size tiny base (tokenizer + Llama, loads with Auto classes)."""
    return build_tiny_base(_cache_root() / f"tiny-test-v{BUILDER_VERSION}", size="test", seed=0)


@pytest.fixture(scope="session")
def tiny_small_base() -> Path:
    """Path to the cached "small" tiny base: slower to build once, but LoRA-trainable to real accuracy."""
    return build_tiny_base(_cache_root() / f"tiny-small-v{BUILDER_VERSION}", size="small", seed=0)


@pytest.fixture(scope="session")
def word_task_records():
    """`word_task(kind, n, seed)`: synthetic `Conversation`s of a rule-based word task."""
    return word_task


@pytest.fixture(scope="session")
def trained_adapter(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """A short LoRA run on `tiny_base` ("second word" task, 48 records, 2 epochs).

    `result.adapter_dir` holds the PEFT adapter, `result.checkpoints` the saved steps
    (one per epoch, with optimizer state), `result.train_indices` which records trained.
    """
    out = tmp_path_factory.mktemp("trained_adapter")
    records = word_task("second_word", 48, seed=1)
    config = TrainConfig(epochs=2, batch_size=8, lr=5e-3, eval_fraction=0.125, logging_steps=2, seed=0)
    return train_adapter(tiny_base, records, config, out)
