"""On-disk store of training-set gradient features, so a new failure costs only its own gradient.

One store directory per (candidate, dataset version), chosen by the caller (the service
puts it under `ARENA_DATA_DIR/features/<candidate>/<dataset version>`). It holds one
`.npy` triple per checkpoint step (features in float16, losses and norms) and `manifest.json`, which
says what the arrays mean: the projection (kind, layout, dim, seed), the preconditioning, the
LoRA parameter layout and the SHA-256 of every record, in order. Arrays are read back
only when all of that matches the request; anything else is a miss, and a write for a
different key clears the old entries, so stale features are never mixed with new ones.
Files are written to a temporary name and renamed, the manifest last.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import msgspec
import numpy as np

from evaluators.gradients import FeatureBatch
from evaluators.records import Conversation, render_plain

MANIFEST = "manifest.json"
STORE_VERSION = 2  # 2: features in float16


class FeatureKey(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the stored numbers depend on besides the checkpoint step."""

    projection_kind: str
    projection_layout: str
    projection_dim: int
    projection_seed: int
    precondition: str
    parameters_sha256: str  # names and shapes of the LoRA parameters
    max_length: int
    record_sha256: list[str]


class FeatureManifest(msgspec.Struct, kw_only=True):
    version: int
    key: FeatureKey
    steps: list[int]


def record_hash(record: Conversation) -> str:
    """SHA-256 of a record's plain rendering: equal records hash equal, whatever their source."""
    return hashlib.sha256(render_plain(record).encode()).hexdigest()


def parameters_hash(shapes: dict[str, tuple[int, ...]]) -> str:
    """SHA-256 of the trainable parameters' names and shapes, in order."""
    text = "\n".join(f"{name}:{','.join(map(str, shape))}" for name, shape in shapes.items())
    return hashlib.sha256(text.encode()).hexdigest()


class FeatureStore:
    """Training-set features per checkpoint step under `root` (created on first write)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def manifest(self) -> FeatureManifest | None:
        """The stored manifest, or None when the store is empty or unreadable."""
        try:
            return msgspec.json.decode((self.root / MANIFEST).read_bytes(), type=FeatureManifest)
        except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            return None

    def get(self, key: FeatureKey, step: int) -> FeatureBatch | None:
        """The features stored for `key` at `step`, or None (a miss) if there are none."""
        manifest = self.manifest()
        if manifest is None or manifest.version != STORE_VERSION or manifest.key != key or step not in manifest.steps:
            return None
        try:
            arrays = [np.load(self._path(step, part)) for part in ("features", "losses", "norms")]
        except (FileNotFoundError, ValueError):
            return None
        features, losses, norms = arrays
        if features.shape != (len(key.record_sha256), key.projection_dim):
            return None
        return _as_read(FeatureBatch(features=features, losses=losses, norms=norms))

    def put(self, key: FeatureKey, step: int, batch: FeatureBatch) -> FeatureBatch:
        """Store `batch` for `key` at `step`; entries stored under another key are dropped.

        Features are kept in float16 (half the disk of float32; a cosine of unit vectors
        moves by about 1e-3), losses and norms in float32. Returns the batch as it will
        be read back, so a first trace scores exactly what a later one reads."""
        self.root.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest()
        if manifest is None or manifest.version != STORE_VERSION or manifest.key != key:
            for old in self.root.glob("step-*.npy"):
                old.unlink(missing_ok=True)
            manifest = FeatureManifest(version=STORE_VERSION, key=key, steps=[])
        stored = FeatureBatch(features=np.ascontiguousarray(batch.features, dtype=np.float16),
                              losses=np.ascontiguousarray(batch.losses, dtype=np.float32),
                              norms=np.ascontiguousarray(batch.norms, dtype=np.float32))
        for part in ("features", "losses", "norms"):
            path = self._path(step, part)
            tmp = path.with_name(path.name + ".tmp.npy")
            np.save(tmp, getattr(stored, part))
            tmp.replace(path)
        manifest.steps = sorted(set(manifest.steps) | {step})
        tmp = self.root / (MANIFEST + ".tmp")
        tmp.write_bytes(msgspec.json.format(msgspec.json.encode(manifest)))
        tmp.replace(self.root / MANIFEST)
        return _as_read(stored)

    def _path(self, step: int, part: str) -> Path:
        return self.root / f"step-{step}.{part}.npy"


def _as_read(batch: FeatureBatch) -> FeatureBatch:
    """Stored arrays as the scorer takes them: float32."""
    return FeatureBatch(features=batch.features.astype(np.float32), losses=batch.losses.astype(np.float32),
                        norms=batch.norms.astype(np.float32))
