"""Attribution: per-example LoRA gradients, their projection and store, and the proof on planted defects.

The fast tests run on the "test"-size tiny base. The proof (`slow`) trains a LoRA on the
`fast` synthetic dataset over the "small" base, traces its benchmark failures, and then
retrains without the records it blamed; then the same on the `chats` preset, whose
planted wrong answers open two-turn chats: about 8 minutes on two CPU cores.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

import evaluators.attribution as attribution
from evaluators.attribution import (
    AttributionError,
    Failure,
    auroc,
    influence,
    load_checkpoint_model,
    precision_at_k,
    reference_conflicts,
    trace_failures,
)
from evaluators.feature_store import FeatureStore
from evaluators.gradients import (
    RandomProjector,
    compute_features,
    load_adam_state,
    loop_gradients,
    per_example_gradients,
    tokenize_examples,
    trainable_parameters,
)
from evaluators.records import Conversation, Message, user_turn
from evaluators.synthetic import make_synthetic_dataset, training_recipe
from evaluators.synthetic_bench import benchmark_outcomes, greedy_answers, is_correct
from service.training import TrainConfig, train_adapter


def qa(prompt: str, answer: str) -> Conversation:
    return Conversation(messages=(Message("user", prompt), Message("assistant", answer)))


@pytest.fixture(scope="module")
def lora_model(tiny_base):
    """The test base with a LoRA on every linear layer; B is random so no gradient is trivially zero."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, attn_implementation="eager")
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    model.eval()
    return model, tokenizer


@pytest.fixture(scope="module")
def examples(lora_model):
    _, tokenizer = lora_model
    records = make_synthetic_dataset("fast", seed=0).records[:12]  # one-word facts and long refusals
    records.append(Conversation(messages=(  # multi-turn: both assistant turns are trained
        Message("user", "Say cat."), Message("assistant", "cat"), Message("user", "Say dog."), Message("assistant", "dog"),
    )))
    return tokenize_examples(tokenizer, records, 96)


def test_vmap_gradients_equal_per_example_backward(lora_model, examples):
    model, _ = lora_model
    reference, ref_losses = loop_gradients(model, examples)
    seen = []
    for indices, grads, losses in per_example_gradients(model, examples, chunk_size=5):
        seen += indices
        for row, i in enumerate(indices):
            torch.testing.assert_close(losses[row], ref_losses[i], atol=1e-5, rtol=1e-5)
            for name, g in grads.items():
                torch.testing.assert_close(g[row], reference[name][i], atol=1e-5, rtol=1e-4)
    assert sorted(seen) == list(range(len(examples)))
    # Only LoRA parameters get gradients, and they are not all zero.
    assert all(".lora_" in name for name in reference)
    assert all(float(g.abs().sum()) > 0 for g in reference.values())


@pytest.mark.parametrize("layout", ["blocks", "dense"])
def test_projection_is_seeded_deterministic_and_preserves_cosines(lora_model, examples, layout):
    model, tokenizer = lora_model
    shapes = {n: p.numel() for n, p in trainable_parameters(model).items()}
    reversed_shapes = dict(reversed(list(shapes.items())))
    a = compute_features(model, tokenizer, examples, RandomProjector(shapes, 2048, seed=7, layout=layout))
    b = compute_features(model, tokenizer, examples, RandomProjector(reversed_shapes, 2048, seed=7, layout=layout))
    c = compute_features(model, tokenizer, examples, RandomProjector(shapes, 2048, seed=8, layout=layout))
    np.testing.assert_allclose(a.features, b.features, atol=1e-6)  # same seed: same projection, whatever the order
    assert not np.allclose(a.features, c.features)
    np.testing.assert_allclose(np.linalg.norm(a.features, axis=1), 1.0, atol=1e-5)
    # Random projection keeps the geometry: projected cosines track the exact ones.
    grads, _ = loop_gradients(model, examples)
    flat = torch.cat([grads[n].reshape(len(examples), -1) for n in shapes], dim=1)
    flat = flat / flat.norm(dim=1, keepdim=True)
    exact = (flat @ flat.T).numpy()
    assert np.abs(a.features @ a.features.T - exact).max() < 0.15


def test_bad_projection_settings_are_refused():
    with pytest.raises(AttributionError, match="kind"):
        RandomProjector({"w": 4}, 64, kind="sparse")  # type: ignore[arg-type]
    with pytest.raises(AttributionError, match="too small"):
        RandomProjector({f"w{i}": 4 for i in range(10)}, 64)


def test_adam_state_is_read_by_parameter_name_and_changes_the_features(tiny_base, trained_adapter, word_task_records):
    checkpoint = trained_adapter.checkpoints[-1]
    model, tokenizer = load_checkpoint_model(tiny_base, checkpoint.path)
    params = trainable_parameters(model)
    state = load_adam_state(checkpoint.path, params)
    assert state is not None and state.step == checkpoint.step
    assert set(state.exp_avg) == set(params)
    assert all(state.exp_avg_sq[n].shape == p.shape and bool((state.exp_avg_sq[n] >= 0).all()) for n, p in params.items())
    records = tokenize_examples(tokenizer, word_task_records("second_word", 6, seed=1), 64)
    projector = RandomProjector({n: p.numel() for n, p in params.items()}, 512)
    plain = compute_features(model, tokenizer, records, projector, mode="none")
    adam = compute_features(model, tokenizer, records, projector, adam=state, mode="adam")
    assert np.abs(plain.features - adam.features).max() > 0.1
    np.testing.assert_allclose(plain.losses, adam.losses)  # preconditioning never changes the loss


def test_features_round_trip_and_a_new_failure_reuses_the_training_set(
    tiny_base, trained_adapter, word_task_records, tmp_path, monkeypatch
):
    records = word_task_records("second_word", 48, seed=1)  # what `trained_adapter` trained on
    checkpoints = [c.path for c in trained_adapter.checkpoints]
    store_dir = tmp_path / "features"
    first = [Failure(prompt=user_turn(records[0].prompt), output="lamp", gold=records[0].answer)]
    second = [Failure(prompt=user_turn(records[5].prompt), output="river")]
    options = {"projection_dim": 1024, "embeddings": False}

    computed: list[int] = []
    real = attribution.compute_features
    monkeypatch.setattr(attribution, "compute_features",
                        lambda model, tok, examples, *a, **k: computed.append(len(examples)) or real(model, tok, examples, *a, **k))

    cold = trace_failures(tiny_base, checkpoints, records, first, store_dir=store_dir, **options)
    assert not cold.reused_training_features
    assert computed.count(len(records)) == len(checkpoints)  # the training set, once per checkpoint
    manifest = FeatureStore(store_dir).manifest()
    assert manifest is not None and manifest.steps == sorted(cold.checkpoints)
    assert manifest.key.projection_dim == 1024 and len(manifest.key.record_sha256) == len(records)
    stamps = {p: p.stat().st_mtime_ns for p in store_dir.glob("*.npy")}

    computed.clear()
    warm = trace_failures(tiny_base, checkpoints, records, second, store_dir=store_dir, **options)
    assert warm.reused_training_features
    assert len(records) not in computed and len(computed) == len(checkpoints)  # only the new failure's gradients
    assert {p: p.stat().st_mtime_ns for p in store_dir.glob("*.npy")} == stamps

    # Features are stored in float16, and the first trace already scored them as stored: a
    # trace from the store equals it exactly, and one without a store (float32) to ~1e-4.
    assert all(np.load(p).dtype == np.float16 for p in store_dir.glob("*.features.npy"))
    again = trace_failures(tiny_base, checkpoints, records, first, store_dir=store_dir, **options)
    np.testing.assert_array_equal(again.column("gradient_score"), cold.column("gradient_score"))
    fresh = trace_failures(tiny_base, checkpoints, records, first, **options)
    np.testing.assert_allclose(again.column("gradient_score"), fresh.column("gradient_score"), atol=1e-4)
    # Another projection or another dataset version is a miss, never a silent mix.
    assert not trace_failures(tiny_base, checkpoints, records, first, store_dir=store_dir, projection_seed=1,
                              **options).reused_training_features
    assert not trace_failures(tiny_base, checkpoints, records[:-1], first, store_dir=store_dir,
                              **options).reused_training_features


def test_trace_inputs_are_checked(tiny_base, trained_adapter, word_task_records, tmp_path):
    records = word_task_records("second_word", 8, seed=1)
    failure = [Failure(prompt=user_turn("Say cat."), output="dog")]
    checkpoints = [c.path for c in trained_adapter.checkpoints]
    with pytest.raises(AttributionError, match="no checkpoints"):
        trace_failures(tiny_base, [], records, failure)
    with pytest.raises(AttributionError, match="no failures"):
        trace_failures(tiny_base, checkpoints, records, [])
    with pytest.raises(AttributionError, match="not a checkpoint"):
        trace_failures(tiny_base, [tmp_path], records, failure)
    with pytest.raises(AttributionError, match="precondition"):
        trace_failures(tiny_base, checkpoints, records, failure, precondition="sgd")  # type: ignore[arg-type]


def test_metrics_influence_and_reference_conflicts():
    assert auroc([0.9, 0.8, 0.1, 0.2], [0, 1]) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], [0, 1]) == 0.0
    assert auroc([0.5, 0.5, 0.5], [0]) == 0.5
    assert precision_at_k([0.9, 0.1, 0.8, 0.7], [0, 1]) == 0.5
    assert precision_at_k([0.9, 0.1, 0.8, 0.7], [0, 2], k=3) == pytest.approx(2 / 3)

    train = [np.eye(3, dtype=np.float32)[:2], np.eye(3, dtype=np.float32)[:2]]
    queries = [np.eye(3, dtype=np.float32)[[0]], -np.eye(3, dtype=np.float32)[[0]]]
    np.testing.assert_allclose(influence(train, queries, [0.75, 0.25]), [[0.5], [0.0]])

    records = [qa("Where does Quinn live?", "Quito"), qa("Where does Quinn live?", "Madrid"),
               qa("Where does Liam live?", "Quito"), qa("where does quinn live", "It is Oslo.")]
    failures = [Failure(prompt=user_turn("Where does Quinn live?"), output="Quito", gold="Madrid"),
                Failure(prompt=user_turn("Where does Liam live?"), output="Rome")]
    # Same prompt (case and punctuation aside), answer other than the gold: a conflict. No gold, no conflicts.
    assert reference_conflicts(records, failures) == [[0, 3], []]
    # Any exchange of a multi-turn record counts, not only its last one.
    chat = Conversation(messages=(*qa("Where does Quinn live?", "Oslo").messages, *qa("What color is the cup?", "red").messages))
    right_then_other = Conversation(messages=(*qa("Where does Quinn live?", "Madrid").messages, *qa("Where does Liam live?", "Rome").messages))
    assert reference_conflicts([chat, right_then_other], failures[:1]) == [[0]]
    with pytest.raises(AttributionError, match=r"one row per exchange .* \(4, 1\)"):  # not one row per record
        reference_conflicts([chat, right_then_other], failures[:1], prompt_similarity=np.zeros((2, 1)))


def test_an_embedding_match_between_questions_about_different_people_is_no_conflict():
    """MiniLM (English-centric) scores Chinese questions about two people as one question; a
    prompt naming someone the other never mentions is another question however close."""
    records = [qa("周杰住在哪里？", "青岛"), qa("张伟住在哪个城市？", "青岛"), qa("Quick question. Where does Bob live?", "Rome")]
    failures = [Failure(prompt=user_turn("张伟住在哪里？"), output="青岛", gold="北京"),
                Failure(prompt=user_turn("Where does Bob live?"), output="Rome", gold="Oslo")]
    close = np.ones((3, 2))  # every prompt "matches" every failure by embeddings
    assert reference_conflicts(records, failures, prompt_similarity=close) == [[1], [2]]


# ----------------------------------------------------------------------------- the proof


@pytest.fixture(scope="module", params=["fast", "chats"])
def planted(request, tiny_small_base, tmp_path_factory):
    """A LoRA trained on a synthetic dataset (`fast`: planted wrong copies are plain
    question-answer records; `chats`: each opens a two-turn chat), its benchmark
    failures, and their traces."""
    seed = 0
    ds = make_synthetic_dataset(request.param, seed=seed)
    work = tmp_path_factory.mktemp("planted")
    run = train_adapter(tiny_small_base, ds.records, TrainConfig(**training_recipe(seed)), work / "run")
    model, tokenizer = load_checkpoint_model(tiny_small_base, run.adapter_dir)
    failures, passes, _ = benchmark_outcomes(model, tokenizer, ds)
    checkpoints = [c.path for c in run.checkpoints]
    store = work / "features"
    with_gold = trace_failures(tiny_small_base, checkpoints, ds.records, failures, passes, store)
    no_gold = [Failure(prompt=f.prompt, output=f.output, id=f.id) for f in failures]
    without_gold = trace_failures(tiny_small_base, checkpoints, ds.records, no_gold, passes, store)
    return SimpleNamespace(ds=ds, seed=seed, work=work, base=tiny_small_base, failures=failures,
                           with_gold=with_gold, without_gold=without_gold)


def _figures(result, column: str, positives: list[int]) -> tuple[float, float]:
    scores = result.column(column)
    return auroc(scores, positives), precision_at_k(scores, positives)


def _assert_found(result, column: str, ds) -> None:
    """`column` finds the planted wrong records (AUROC ≥ 0.95, precision@k ≥ 0.8), beats
    the loss rank and is at least as good as the embedding nearest neighbour — better
    where the records are chats, whose whole text is no longer the failure's (on plain
    records the neighbour is exact: a failure is its planted record word for word)."""
    positives = ds.planted_wrong
    ours = _figures(result, column, positives)
    loss = _figures(result, "loss", positives)
    nearest = _figures(result, "embedding_score", positives)
    assert ours[0] >= 0.95 and ours[1] >= 0.8, ours
    assert ours[0] > loss[0] and ours[1] > loss[1], (ours, loss)
    assert ours[0] >= nearest[0] and ours[1] >= nearest[1], (ours, nearest)
    if ds.config.wrong_in_chats:
        assert ours != nearest, (ours, nearest)


@pytest.mark.slow
def test_planted_wrong_answers_are_found_with_gold(planted):
    ds, result = planted.ds, planted.with_gold
    failed = {int(f.id) for f in planted.failures}
    assert set(ds.corrupted_items) <= failed  # the planted records really do cause failures
    _assert_found(result, "score", ds)
    # Per failure: its own planted copies lead its trace, contradict its gold, and oppose it.
    for trace, failure in zip(result.failures, planted.failures):
        caused = set(ds.caused_by.get(int(failure.id), []))
        if caused:
            assert set(trace.top_records[: len(caused)]) == caused
            assert set(trace.conflicting_records) == caused
            assert caused <= set(trace.opposing_records[:5])
    flagged = {r.index for r in result.records if r.reference_conflict}
    assert set(ds.planted_wrong) <= flagged


@pytest.mark.slow
def test_planted_wrong_answers_are_found_without_gold(planted):
    ds, result = planted.ds, planted.without_gold
    assert result.reused_training_features  # the second trace read the stored training features
    assert not any(r.reference_conflict for r in result.records)
    _assert_found(result, "gradient_score", ds)


@pytest.mark.slow
def test_dropping_the_top_records_and_retraining_fixes_the_failures_they_caused(planted):
    ds, seed = planted.ds, planted.seed
    caused = sorted({int(f.id) for f in planted.failures} & set(ds.caused_by))
    k = len(ds.planted_wrong)

    def fixed_without(drop: set[int], name: str) -> int:
        kept = [r for i, r in enumerate(ds.records) if i not in drop]
        run = train_adapter(planted.base, kept, TrainConfig(**training_recipe(seed)), planted.work / name)
        model, tokenizer = load_checkpoint_model(planted.base, run.adapter_dir)
        outputs = greedy_answers(model, tokenizer, [ds.benchmark[j][0] for j in caused])
        return sum(is_correct(o, ds.benchmark[j][1]) for o, j in zip(outputs, caused))

    top = fixed_without(set(planted.with_gold.ranking[:k]), "without-top")
    rand = fixed_without(set(random.Random(seed).sample(range(len(ds.records)), k)), "without-random")
    assert top >= 0.8 * len(caused), (top, len(caused))
    assert top >= 2 * rand and top > rand, (top, rand)
