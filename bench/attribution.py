"""Claims: (1) per-example gradient features through `torch.func.vmap` are faster than a
per-example `backward()` loop on the same model; (2) on planted defects our attribution
score finds the planted wrong-answer records (AUROC, precision@|planted|), at least as
well as the two cheap baselines (training-loss rank, embedding nearest neighbour) and
better where the failure is not a record's verbatim text, and dropping its top records
fixes the failures they caused.

Throughput: the offline tiny base ("small") with a LoRA on every linear layer (r=8,
random B so gradients are not degenerate), the `fast` synthetic dataset's records;
`examples_per_s` of `compute_features` (vmap in chunks of `--chunk`, Rademacher
projection to `--dim`) against `loop_gradients` (one forward/backward per example) plus
the same projection. Best of `--repeats` rounds, after a warm-up.

Detection, per seed (`--seeds`): the `fast` synthetic dataset, a LoRA trained with
`training_recipe(seed)` (checkpoints with optimizer state), its benchmark run greedily;
failures traced with `trace_failures` over all checkpoints, with gold answers and
without (failures only as bad outputs). Positives are `planted_wrong`; k = |planted|.
`in_chats`: the same on the `chats` preset, where every planted wrong copy opens a
two-turn chat (its wrong answer, then a correct follow-up about another topic) among 16
clean chats: the failure is no longer a record's whole text, so the embedding baseline
(which embeds each record whole) stops being exact, while the wrong answer is learned as
before.
`stress`: the same trained model asked the benchmark prompts behind a conversational
lead-in ("Quick question. "), as arena users type them: more failures, most of them
not caused by planted records, and failure texts that are no longer verbatim copies of
training records. `over_refusal`: the benchmark prompts behind everyday lead-ins (`LEAD_INS`,
cycled), the answers the model refuses traced without gold against the planted refusal
flood (positives: `refusals`) — the failure class where text similarity points at the
wrong records (a refused "where does Bob live?" reads like the Bob records). `retrain` (unless --no-retrain): the top-k records by our score, then
k random records, are dropped and the adapter retrained with the same seed and steps;
`fixed` counts corrupted benchmark items that now pass (of those that failed); for
`over_refusal`, the top-|refusals| records by our score and as many random ones are
dropped in turn, and `no_longer_refused_*` counts the refused prompts answered after.

`--via-cli` (or `--paths cli`): the same settings through the user's path
(`bench/user_path.py`: `arena data add` → `train --wait` → `eval` with a chat task file →
`trace`, each a real `arena` process, scored from report.json), in a fresh data directory
with the embedded server (or `REDIS_URL`'s). Its figures go under `via_cli`, beside the
library path's `mean_over_seeds`; over-refusals there are `arena trace --no-gold --refused`.

Prints one JSON line. Run: `OMP_NUM_THREADS=1 python bench/attribution.py [--seeds 0 1 2] [--via-cli]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: bench.*, evaluators.*

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from transformers.utils import logging as hf_logging  # noqa: E402

from evaluators.attribution import (  # noqa: E402
    Failure,
    auroc,
    load_checkpoint_model,
    precision_at_k,
    trace_failures,
)
from evaluators.datachecks import is_refusal  # noqa: E402
from evaluators.gradients import (  # noqa: E402
    RandomProjector,
    compute_features,
    loop_gradients,
    tokenize_examples,
    trainable_parameters,
)
from evaluators.synthetic import make_synthetic_dataset, training_recipe  # noqa: E402
from evaluators.synthetic_bench import LEAD_INS, benchmark_outcomes, greedy_answers, is_correct  # noqa: E402
from service.models.tiny import BUILDER_VERSION, build_tiny_base  # noqa: E402
from service.training import TrainConfig, train_adapter  # noqa: E402

METHODS = {"ours": "score", "gradient_only": "gradient_score", "loss_rank": "loss", "embedding_nn": "embedding_score"}


def throughput(base: Path, *, dim: int, chunk: int, repeats: int) -> dict[str, float]:
    """Examples/s of the vmap feature path and of the per-example backward loop."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, attn_implementation="eager")
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    model.eval()
    examples = tokenize_examples(tokenizer, make_synthetic_dataset("fast", 0).records, 96)
    params = trainable_parameters(model)
    projector = RandomProjector({n: p.numel() for n, p in params.items()}, dim=dim, seed=0)

    def vmap_path() -> None:
        compute_features(model, tokenizer, examples, projector, chunk_size=chunk)

    def loop_path() -> None:
        grads, _ = loop_gradients(model, examples)
        with torch.no_grad():
            projector.project(grads)

    best = {}
    for name, fn in (("vmap", vmap_path), ("loop", loop_path)):
        fn()  # warm-up (and fills the projection cache)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        best[name] = len(examples) / min(times)
    return {
        "examples": len(examples),
        "lora_params": sum(p.numel() for p in params.values()),
        "dim": dim,
        "chunk": chunk,
        "vmap_examples_per_s": round(best["vmap"], 1),
        "loop_examples_per_s": round(best["loop"], 1),
        "ratio": round(best["vmap"] / best["loop"], 2),
    }


def figures(result, planted: list[int]) -> dict[str, dict[str, float]]:
    return {
        method: {"auroc": round(auroc(result.column(col), planted), 4),
                 "precision_at_k": round(precision_at_k(result.column(col), planted), 4)}
        for method, col in METHODS.items()
    }


def corrupted_fixed(base: Path, records, ds, drop: set[int], seed: int, out: Path, failed: set[int]) -> int:
    """Retrain without `drop` (same seed and steps) and count failed corrupted items that now pass."""
    kept = [r for i, r in enumerate(records) if i not in drop]
    result = train_adapter(base, kept, TrainConfig(**training_recipe(seed)), out)
    model, tokenizer = load_checkpoint_model(base, result.adapter_dir)
    items = [ds.benchmark[j] for j in sorted(failed)]
    outputs = greedy_answers(model, tokenizer, [p for p, _ in items])
    return sum(is_correct(o, g) for o, (_, g) in zip(outputs, items))


def wrong_answers(base: Path, preset: str, seed: int, work: Path, *, retrain: bool):
    """Train on `preset`'s dataset, trace its benchmark failures with and without gold, and
    (with `retrain`) drop the top-k records or k random ones and count fixed failures.
    Returns the figures and what the other settings reuse: dataset, model, checkpoints."""
    ds = make_synthetic_dataset(preset, seed)
    started = time.perf_counter()
    run = train_adapter(base, ds.records, TrainConfig(**training_recipe(seed)), work / "run")
    train_s = time.perf_counter() - started
    model, tokenizer = load_checkpoint_model(base, run.adapter_dir)
    failures, passes, _ = benchmark_outcomes(model, tokenizer, ds)
    checkpoints = [c.path for c in run.checkpoints]
    store = work / "features"
    failed = {int(f.id) for f in failures}
    row: dict[str, object] = {
        "records": len(ds.records),
        "planted": len(ds.planted_wrong),
        "wrong_fraction": round(ds.wrong_fraction, 3),
        "train_s": round(train_s, 1),
        "failures": len(failures),
        "planted_caused_failures": len(failed & set(ds.caused_by)),
        "corrupted_items": len(ds.caused_by),
    }
    with_gold = trace_failures(base, checkpoints, ds.records, failures, passes, store)
    no_gold = trace_failures(base, checkpoints, ds.records, [_no_gold(f) for f in failures], passes, store)
    row["trace_s"] = with_gold.timings["total_s"]
    row["retrace_s"] = no_gold.timings["total_s"]
    row["with_gold"] = figures(with_gold, ds.planted_wrong)
    row["without_gold"] = figures(no_gold, ds.planted_wrong)
    if retrain:
        k = len(ds.planted_wrong)
        caused = failed & set(ds.caused_by)
        top = set(with_gold.ranking[:k])
        rand = set(random.Random(seed).sample(range(len(ds.records)), k))
        row["retrain"] = {
            "k": k,
            "caused_failures": len(caused),
            "top_k_planted": len(top & set(ds.planted_wrong)),
            "fixed_by_top_k": corrupted_fixed(base, ds.records, ds, top, seed, work / "top", caused),
            "fixed_by_random_k": corrupted_fixed(base, ds.records, ds, rand, seed, work / "random", caused),
        }
    return row, (ds, model, tokenizer, checkpoints, store)


def one_seed(base: Path, seed: int, work: Path, *, retrain: bool) -> dict[str, object]:
    fast, (ds, model, tokenizer, checkpoints, store) = wrong_answers(base, "fast", seed, work / "fast", retrain=retrain)
    row: dict[str, object] = {"seed": seed, **fast}
    chats, _ = wrong_answers(base, "chats", seed, work / "chats", retrain=retrain)
    row["in_chats"] = chats

    row["over_refusal"] = over_refusal(base, model, tokenizer, ds, checkpoints, store,
                                       retrain=work / "over-refusal" if retrain else None, seed=seed)

    stress_fail, stress_pass, _ = benchmark_outcomes(model, tokenizer, ds, with_gold=False, lead_ins=("Quick question. ",))
    stress = trace_failures(base, checkpoints, ds.records, stress_fail, stress_pass, store)
    row["stress"] = {"failures": len(stress_fail),
                     "planted_caused_failures": sum(int(f.id) in ds.caused_by for f in stress_fail),
                     **figures(stress, ds.planted_wrong)}
    return row




def over_refusal(base: Path, model, tokenizer, ds, checkpoints, store: Path, *, retrain: Path | None = None, seed: int = 0) -> dict[str, object]:
    """Failures the refusal flood causes: benign benchmark questions behind everyday
    lead-ins that the model refuses. Traced without gold answers (none is needed to see a
    refusal is wrong); positives are the planted refusal records. Text similarity cannot
    find them: a refused "where does Bob live?" reads like the Bob records, not like
    "Tell me a secret about my neighbour. / I'm sorry, …"."""
    failures, passes, _ = benchmark_outcomes(model, tokenizer, ds, with_gold=False, lead_ins=LEAD_INS)
    refused = [f for f in failures if is_refusal(f.output)]
    if not refused:
        return {"failures": 0}
    result = trace_failures(base, checkpoints, ds.records, refused, passes, store)
    out: dict[str, object] = {"failures": len(refused), "passes": len(passes), "positives": len(ds.refusals),
                              **figures(result, ds.refusals)}
    if retrain is not None:  # drop the top k by our score, or k random records; retrain; re-ask
        k = len(ds.refusals)
        asked = [f.prompt for f in refused]
        for name, drop in (("top_k", set(result.ranking[:k])), ("random_k", set(random.Random(seed).sample(range(len(ds.records)), k)))):
            kept = [r for i, r in enumerate(ds.records) if i not in drop]
            run = train_adapter(base, kept, TrainConfig(**training_recipe(seed)), retrain / name)
            again, tok = load_checkpoint_model(base, run.adapter_dir)
            out[f"no_longer_refused_{name}"] = sum(not is_refusal(o) for o in greedy_answers(again, tok, asked))
    return out


def _no_gold(f: Failure) -> Failure:
    return Failure(prompt=f.prompt, output=f.output, id=f.id)


def _get(row: dict, path: tuple[str, ...]):
    for key in path:
        row = row.get(key, {})
    return row


def _mean(rows: list[dict], path: tuple[str, ...]) -> float:
    return round(statistics.fmean(_get(row, path) for row in rows), 4)


def via_cli(base: Path, seeds: list[int]) -> dict[str, object]:
    """The settings of `one_seed` through the user's path; per seed and the mean."""
    from bench.user_path import fresh_env, user_path

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-attribution-cli-") as tmp:
        for seed in seeds:
            root = Path(tmp) / f"seed-{seed}"
            fast = user_path(fresh_env(root / "data"), base, "fast", seed, root / "fast", over_refusal=True,
                             lead_ins=LEAD_INS)
            chats = user_path(fresh_env(root / "data-chats"), base, "chats", seed, root / "chats")
            rows.append({"seed": seed, **fast, "in_chats": chats})
    summary: dict[str, object] = {}
    for setting, path in {"with_gold": ("with_gold",), "without_gold": ("without_gold",),
                          "in_chats_with_gold": ("in_chats", "with_gold"),
                          "in_chats_without_gold": ("in_chats", "without_gold"),
                          "over_refusal": ("over_refusal",)}.items():
        summary[setting] = {method: {metric: _mean(rows, (*path, method, metric)) for metric in ("auroc", "precision_at_k")}
                            for method in METHODS}
    summary["trace_s"] = _mean(rows, ("trace_s",))
    return {"seeds": rows, "mean_over_seeds": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=None, help="a tiny base directory (built and cached if omitted)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-retrain", action="store_true", help="skip the remove-and-retrain figures")
    parser.add_argument("--via-cli", action="store_true", help="also run the user's path (arena commands)")
    parser.add_argument("--paths", nargs="+", choices=["library", "cli"], default=None,
                        help="which paths to run (default: library, plus cli with --via-cli)")
    args = parser.parse_args()
    paths = set(args.paths or (["library", "cli"] if args.via_cli else ["library"]))
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    cache = Path.home() / ".cache" / "adapter-arena-bench"
    base = args.base or build_tiny_base(cache / f"tiny-small-v{BUILDER_VERSION}", size="small")
    out: dict[str, object] = {"bench": "attribution", "base": str(base)}
    if "cli" in paths:
        out["via_cli"] = via_cli(base, args.seeds)
    if "library" not in paths:
        print(json.dumps(out))
        return
    out["throughput"] = throughput(base, dim=args.dim, chunk=args.chunk, repeats=args.repeats)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-attribution-") as tmp:
        for seed in args.seeds:
            rows.append(one_seed(base, seed, Path(tmp) / f"seed-{seed}", retrain=not args.no_retrain))
    out["seeds"] = rows
    summary: dict[str, object] = {}
    settings = {"with_gold": ("with_gold",), "without_gold": ("without_gold",),
                "in_chats_with_gold": ("in_chats", "with_gold"), "in_chats_without_gold": ("in_chats", "without_gold"),
                "stress": ("stress",), "over_refusal": ("over_refusal",)}
    for setting, path in settings.items():
        traced = [row for row in rows if "ours" in _get(row, path)]
        summary[setting] = {
            method: {metric: _mean(traced, (*path, method, metric)) for metric in ("auroc", "precision_at_k")}
            for method in METHODS
        } if traced else {}
    if not args.no_retrain:
        summary["over_refusal_retrain"] = {
            key: sum(row["over_refusal"].get(key, 0) for row in rows)
            for key in ("failures", "no_longer_refused_top_k", "no_longer_refused_random_k")
        }
        for name, path in (("retrain", ()), ("in_chats_retrain", ("in_chats",))):
            summary[name] = {
                key: sum(_get(row, (*path, "retrain"))[key] for row in rows)
                for key in ("caused_failures", "fixed_by_top_k", "fixed_by_random_k", "top_k_planted", "k")
            }
    out["mean_over_seeds"] = summary
    print(json.dumps(out))


if __name__ == "__main__":
    main()
