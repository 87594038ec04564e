"""`arena base tiny`: an offline base model built from nothing but this package.

A byte-level BPE tokenizer trained with `tokenizers` on the bundled synthetic corpus
(`service.models.corpus`), a small Llama, and a short pretraining on the same corpus.
The result is an ordinary Hugging Face directory: `AutoModelForCausalLM` and
`AutoTokenizer` load it, its chat template is `PLAIN_CHAT_TEMPLATE`, and its end of
turn is `</s>`, so everything downstream (LoRA training, generation, attribution) works
with no network.

The pretraining loop is written out here rather than run through `Trainer`: it is a
fixed recipe of a few hundred steps on packed token windows, and at this size the
plain loop is both the readable version and a little faster.

What the recipe is for: a LoRA on this base must be able to write *new* facts ("Where
does Sam live?" -> "Rome") in seconds. That needs a base whose answer position already
attends to the asked-about subject and carries its identity (a LoRA on q/v then only
redirects what that attention reads), which is what the corpus's facts-in-context,
closed-book and copying documents teach. Two settings make that emerge within a
minute of CPU:

- weights drawn at `init_std` ≈ 1/sqrt(hidden) instead of Llama's 0.02 (tuned for
  hidden sizes in the thousands): at hidden 128 the default leaves attention logits
  near zero, so attention stays uniform for hundreds of steps and the base never
  learns to copy a word out of its prompt;
- a shallow, cheap model (2 layers) trained on short windows with large batches: more
  documents per second, and each step sees many questions.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import msgspec
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from evaluators.records import EOS, PLAIN_CHAT_TEMPLATE
from service.errors import InvalidInput
from service.models.corpus import corpus

#: Bump when the recipe changes, so cached builds are not reused across recipes.
BUILDER_VERSION = 3
#: Written last, so its presence means the directory holds a complete build.
MARKER = "tiny_base.json"

PAD, BOS = "<pad>", "<s>"

Size = Literal["small", "test"]


class TinySpec(msgspec.Struct, frozen=True):
    """The recipe for one size: model shape, tokenizer and pretraining schedule."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    layers: int
    heads: int
    seq_len: int
    batch_size: int
    steps: int
    lr: float
    documents: int
    #: Standard deviation of the initial weights (Llama's `initializer_range`).
    init_std: float = 0.02


SIZES: dict[str, TinySpec] = {
    # ~40 s on one core (measured 40–52 s with torch on one thread, machine quiet to
    # busy): a base on which a q_proj,v_proj LoRA (r=16, lr 5e-3) learns 50 made-up
    # facts to 100% exact match in 700 steps, under 10 s (bench/tiny_base.py).
    "small": TinySpec(
        vocab_size=1024, hidden_size=128, intermediate_size=384, layers=2, heads=4,
        seq_len=64, batch_size=32, steps=400, lr=3e-3, documents=20000, init_std=0.08,
    ),
    # A few seconds: for tests that need a real model directory, not a capable one.
    "test": TinySpec(
        vocab_size=1024, hidden_size=64, intermediate_size=192, layers=2, heads=4,
        seq_len=64, batch_size=16, steps=250, lr=3e-3, documents=5000, init_std=0.1,
    ),
}


#: `lang="zh"`: the bilingual base. Its corpus is English and Chinese documents, half
#: each (`service.models.corpus_zh`), over twice the documents, so each language sees as
#: many as the English base does; the tokenizer gets twice the vocabulary (the Chinese
#: characters take their own merges) and pretraining a quarter more steps. Measured with
#: `bench/tiny_base.py --lang zh`: a LoRA learns the Chinese synthetic set as it learns
#: the English one on the English base.
LANGS = {"en": ("en",), "zh": ("en", "zh")}


def _spec_for(spec: TinySpec, lang: str) -> TinySpec:
    if lang == "en":
        return spec
    return msgspec.structs.replace(
        spec, vocab_size=2 * spec.vocab_size, documents=2 * spec.documents, steps=spec.steps * 5 // 4
    )


class TinyBuild(msgspec.Struct, frozen=True):
    """What `MARKER` records: the parameters that identify a build, and how it went."""

    builder_version: int
    size: str
    seed: int
    steps: int
    final_loss: float
    wall_s: float
    parameters: int
    languages: tuple[str, ...] = ("en",)


def build_tiny_base(
    out_dir: str | os.PathLike[str],
    *,
    size: Size = "small",
    seed: int = 0,
    steps: int | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    lang: str = "en",
) -> Path:
    """Build (or reuse) the offline tiny base in `out_dir` and return its path.

    `size` is "small" (the CLI's default, ~40 s on one core) or "test" (a few
    seconds). `steps` overrides the size's pretraining steps. `progress(step, total,
    loss)` is called after each pretraining step. If `out_dir` already holds a complete
    build with the same size, seed, steps and recipe version, it is reused untouched;
    a build with other parameters is replaced. `lang="zh"` builds the bilingual base
    (English and Chinese corpus and tokenizer, see `LANGS`); "en" the English one. The directory is written atomically
    (built beside it, then renamed), so a killed build never leaves a half base behind.
    Its config.json defaults to eager attention, so the loaded model works under
    `torch.func.vmap` (pass `attn_implementation="sdpa"` to override).
    """
    if size not in SIZES:
        raise InvalidInput(f"tiny base size {size!r}: expected one of {sorted(SIZES)}")
    if lang not in LANGS:
        raise InvalidInput(f"tiny base language {lang!r}: expected one of {sorted(LANGS)}")
    spec = _spec_for(SIZES[size], lang)
    total_steps = spec.steps if steps is None else int(steps)
    if total_steps < 0:
        raise InvalidInput(f"tiny base steps={steps}: expected a non-negative integer")
    out = Path(out_dir)
    existing = read_tiny_build(out)
    if existing is not None and (
        existing.builder_version, existing.size, existing.seed, existing.steps, existing.languages
    ) == (BUILDER_VERSION, size, seed, total_steps, LANGS[lang]):
        return out
    if out.exists() and existing is None and any(out.iterdir()):
        raise InvalidInput(
            f"{out}: directory is not empty and holds no tiny base ({MARKER} missing); pick another path"
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        _build_into(tmp, spec, size=size, seed=seed, steps=total_steps, progress=progress, languages=LANGS[lang])
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_tiny_build(path: str | os.PathLike[str]) -> TinyBuild | None:
    """The build record of a complete tiny base at `path`, or None if there is none."""
    marker = Path(path) / MARKER
    try:
        return msgspec.json.decode(marker.read_bytes(), type=TinyBuild)
    except (FileNotFoundError, NotADirectoryError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def _replace_dir(new: Path, out: Path) -> None:
    """Move the finished build `new` to `out`, replacing an old build there."""
    if out.exists():
        trash = out.with_name(f".{out.name}.old-{os.getpid()}")
        try:
            out.rename(trash)
        except FileNotFoundError:  # another process replaced it first
            trash = None
        try:
            new.rename(out)
        finally:
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)
        return
    try:
        new.rename(out)
    except OSError:
        # A concurrent builder won the rename; its build has the same parameters only if
        # its marker says so, and callers re-check via `read_tiny_build`.
        if read_tiny_build(out) is None:
            raise


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts`, with `<pad>`, `<s>` and `</s>`.

    Byte-level means any input string encodes (no unknown token); `</s>` is a special
    token, so the plain chat format's end of turn is one token the model can emit.
    """
    tok = Tokenizer(models.BPE())
    # Spaces are tokens of their own, so a word has one spelling whether or not a space
    # precedes it: copying a word from a prompt into an answer is then the identity on
    # token ids, which a tiny model (with tied embeddings) learns far sooner.
    # Han characters (and CJK punctuation) are pre-tokens of their own too: a Chinese word is then the same run
    # of character tokens wherever it stands (text has no spaces to cut it from its
    # neighbours), for the same reason. English text never matches, so an English
    # tokenizer is unchanged by it.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(" "), behavior="isolated"),
            pre_tokenizers.Split(Regex("[\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=PLAIN_CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )


def _build_into(
    path: Path,
    spec: TinySpec,
    *,
    size: str,
    seed: int,
    steps: int,
    progress: Callable[[int, int, float], None] | None,
    languages: tuple[str, ...] = ("en",),
) -> None:
    start = time.perf_counter()
    texts = corpus(spec.documents, seed=seed, languages=languages)
    tokenizer = train_tokenizer(texts, spec.vocab_size)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=spec.init_std,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    final_loss = _pretrain(model, tokenizer, texts, spec, seed=seed, steps=steps, progress=progress)

    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    _default_to_eager_attention(path / "config.json")
    record = TinyBuild(
        builder_version=BUILDER_VERSION,
        size=size,
        seed=seed,
        steps=steps,
        final_loss=final_loss,
        wall_s=round(time.perf_counter() - start, 3),
        parameters=sum(p.numel() for p in model.parameters()),
        languages=languages,
    )
    (path / MARKER).write_bytes(msgspec.json.format(msgspec.json.encode(record)))


def _pretrain(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    texts: list[str],
    spec: TinySpec,
    *,
    seed: int,
    steps: int,
    progress: Callable[[int, int, float], None] | None,
) -> float:
    """Next-token pretraining on random windows of the packed corpus; returns the last loss."""
    ids = [i for doc in tokenizer(texts, add_special_tokens=False)["input_ids"] for i in doc]
    stream = torch.tensor(ids, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:  # linear warmup, cosine decay to 10%
        if step < warmup:
            return spec.lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    model.train()
    loss_value = float("nan")
    for step in range(steps):
        starts = torch.randint(0, len(stream) - spec.seq_len - 1, (spec.batch_size,), generator=gen)
        batch = torch.stack([stream[s : s + spec.seq_len] for s in starts.tolist()])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_value = float(loss.detach())
        if progress is not None:
            progress(step + 1, steps, loss_value)
    model.eval()
    return loss_value


def _default_to_eager_attention(config_path: Path) -> None:
    """Make `from_pretrained` load this base with eager attention unless told otherwise.

    Transformers does not serialise the attention implementation, but reads an
    `attn_implementation` key from config.json as the default. Eager is the one that
    works under `torch.func.vmap` with an attention mask (per-example gradients for
    attribution); SDPA fails there. At this size it costs no speed worth measuring.
    """
    config = json.loads(config_path.read_text())
    config["attn_implementation"] = "eager"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def describe_build(path: str | os.PathLike[str]) -> dict[str, object]:
    """The build record at `path` as a plain dict (for `arena base tiny --json`)."""
    build = read_tiny_build(path)
    if build is None:
        raise InvalidInput(f"{path}: no complete tiny base here ({MARKER} missing)")
    return json.loads(msgspec.json.encode(build))
