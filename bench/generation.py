"""Claim: mixed-adapter batches answer arena traffic faster than generating each answer alone.

Builds the offline tiny base (`service.models.tiny`, "test" size unless --base/--size),
puts four LoRA candidates with random weights on it, and measures greedy generation
(outputs asserted identical in every mode) for:

- 64 battles (two different candidates, one prompt each): every answer on its own, each
  battle's two answers in one call, 8 threads sending battles concurrently (the backend
  coalesces them), and all battles in one call of mixed-adapter batches. `ratio` is
  all-battles-in-one-call over alone (goal >= 1.5).
- 4 candidates x 32 prompts (a benchmark): 4 calls whose 32-row batches each mix all four
  adapters vs 4 calls of one candidate each (what PEFT's per-adapter gather costs), and all
  128 in one call (the backend groups rows by candidate itself).

Prints one JSON line. Run: `OMP_NUM_THREADS=1 python bench/generation.py [--max-new-tokens 64]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from evaluators.records import user_turn  # noqa: E402
from service.generation import GenerationParams, GenItem, InProcessBackend  # noqa: E402
from service.models.tiny import build_tiny_base  # noqa: E402

CANDIDATES = ["cand-0", "cand-1", "cand-2", "cand-3"]
SUBJECTS = ["river", "garden", "market", "robot", "violin", "glacier", "lantern", "harbor"]
ASKS = ["Describe a {} in one sentence.", "Name three things found near a {}.", "Why would anyone visit a {}?",
        "Write a short story about a {}.", "List words that rhyme with {}.", "What colour is a {}?",
        "Give advice to someone who owns a {}.", "Explain how a {} works."]


def make_adapters(base: Path, root: Path, seed: int) -> dict[str, Path]:
    """Four LoRA adapters (r=8 on every projection) with small random weights."""
    adapters = {}
    for i, name in enumerate(CANDIDATES):
        torch.manual_seed(seed + i)
        model = AutoModelForCausalLM.from_pretrained(base)
        config = LoraConfig(
            r=8,
            lora_alpha=16,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            init_lora_weights=False,
        )
        peft_model = get_peft_model(model, config)
        with torch.no_grad():
            for name_, param in peft_model.named_parameters():
                if "lora_B" in name_:
                    param.mul_(0.05)  # a trained-adapter-sized change, not noise that drowns the base
        peft_model.save_pretrained(root / name)
        adapters[name] = root / name
    return adapters


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def throughput(generations, seconds: float) -> dict[str, float]:
    tokens = sum(g.completion_tokens for g in generations)
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="an existing base model directory (else the tiny base is built)")
    parser.add_argument("--size", default="test", choices=["test", "small"], help="tiny base size to build")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--battles", type=int, default=64)
    parser.add_argument("--bench-prompts", type=int, default=32)
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # inside peft, not ours

    work = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    base = args.base or build_tiny_base(work / "base", size=args.size, seed=args.seed)
    adapters = make_adapters(base, work, seed=1000 + args.seed)
    backend = InProcessBackend(max_adapters=8, max_batch_size=32, device=args.device)
    for name, path in adapters.items():
        backend.register(name, base, path)
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    prompts = [ask.format(subject) for ask in ASKS for subject in SUBJECTS]
    rng = random.Random(args.seed)

    # Warm up: load the base and every adapter, so loading is not timed.
    backend.generate([GenItem(model=name, prompt=user_turn("hello"), params=params) for name in CANDIDATES])

    # 1. Arena traffic: one prompt per battle, two different candidates.
    battles = []
    for b in range(args.battles):
        a, c = rng.sample(CANDIDATES, 2)
        prompt = user_turn(prompts[b % len(prompts)])
        battles.append([GenItem(model=a, prompt=prompt, params=params), GenItem(model=c, prompt=prompt, params=params)])
    flat = [item for battle in battles for item in battle]

    alone, alone_s = timed(lambda: [backend.generate([item])[0] for item in flat])
    per_battle, per_battle_s = timed(lambda: [g for battle in battles for g in backend.generate(battle)])
    concurrent: list = [None] * len(battles)

    def worker(offset: int) -> None:
        for b in range(offset, len(battles), 8):
            concurrent[b] = backend.generate(battles[b])

    def run_threads():
        threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    _, concurrent_s = timed(run_threads)
    concurrent_flat = [g for pair in concurrent for g in pair]
    mixed, mixed_s = timed(lambda: backend.generate(flat))
    texts = [g.text for g in alone]
    for other in (per_battle, concurrent_flat, mixed):
        assert [g.text for g in other] == texts, "mixed-adapter batching changed an answer"

    # 2. A benchmark: every candidate on the same prompts.
    bench_prompts = [user_turn(p) for p in prompts[: args.bench_prompts]]
    bench_items = [GenItem(model=m, prompt=p, params=params) for m in CANDIDATES for p in bench_prompts]
    step = len(bench_prompts) // len(CANDIDATES)  # 4 calls of 32 rows each, every row's batch mixing 4 adapters
    mixed_calls = [
        [i for i in bench_items if i.prompt in bench_prompts[k : k + step]] for k in range(0, len(bench_prompts), step)
    ]
    bench_mixed, bench_mixed_s = timed(lambda: [g for call in mixed_calls for g in backend.generate(call)])
    per_candidate, per_candidate_s = timed(
        lambda: [g for m in CANDIDATES for g in backend.generate([i for i in bench_items if i.model == m])]
    )
    one_call, one_call_s = timed(lambda: backend.generate(bench_items))
    by_item = {(g.model, i.prompt.prompt): g.text for i, g in zip(bench_items, per_candidate)}
    mixed_flat = [i for call in mixed_calls for i in call]
    assert [g.text for g in bench_mixed] == [by_item[(i.model, i.prompt.prompt)] for i in mixed_flat]
    assert [g.text for g in one_call] == [g.text for g in per_candidate], "batch composition changed an answer"

    mixed_tp = throughput(mixed, mixed_s)
    alone_tp = throughput(alone, alone_s)
    result = {
        "bench": "generation",
        "device": str(backend.device),
        "base": str(args.base) if args.base else f"tiny-{args.size}",
        "max_new_tokens": args.max_new_tokens,
        "max_batch_size": backend.max_batch_size,
        "battles": {
            "n": len(battles),
            "answers": len(flat),
            "alone": alone_tp,
            "per_battle_call": throughput(per_battle, per_battle_s),
            "concurrent_8_threads": throughput(concurrent_flat, concurrent_s),
            "mixed_batches": mixed_tp,
            "outputs_equal": True,
        },
        "ratio": round(mixed_tp["tokens_per_s"] / alone_tp["tokens_per_s"], 2),
        "ratio_per_battle_call": round(per_battle_s and alone_s / per_battle_s, 2),
        "ratio_concurrent": round(alone_s / concurrent_s, 2),
        "benchmark_4x%d" % len(bench_prompts): {
            "mixed_batches": throughput(bench_mixed, bench_mixed_s),
            "per_candidate_batches": throughput(per_candidate, per_candidate_s),
            "one_call": throughput(one_call, one_call_s),
            "ratio_mixed_over_per_candidate": round(per_candidate_s / bench_mixed_s, 2),
            "outputs_equal": True,
        },
        "goal_ratio": 1.5,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
