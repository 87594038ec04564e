"""LoRA training of a candidate: `Conversation`s in, a PEFT adapter and its training record out.

`train_adapter` runs `transformers.Trainer` on a `peft` LoRA model with answer-only loss
(every assistant turn trained, everything else -100; see `evaluators.chat_format`), its
batches packed without padding where the base allows it (`service.packing`). It is
written for a job queue with at-least-once delivery:

- everything lands under one `out_dir`: `adapter/` (PEFT format), `checkpoints/checkpoint-N`
  (adapter + optimizer + scheduler + RNG state; `attribution_checkpoints` of them, spread
  over training, are kept for attribution, see `service.checkpoints`),
  `run.json` (what this run is) and `metrics.json` (the `TrainResult`, written last);
- a rerun of the same run resumes from its last complete checkpoint, and a rerun of a
  finished run returns the stored result without training;
- `should_stop()` cancels within a step (`TrainingCancelled`, no adapter written), and a
  NaN loss stops at the step it appears (`TrainingDiverged`).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    PrinterCallback,
    TrainingArguments,
)

from evaluators.chat_format import (
    IGNORE_INDEX,
    ChatFormatError,
    encode_prompt,
    render_prompt,
    special_prefix,
    tokenize_conversation,
    uses_chat_template,
)
from evaluators.records import Conversation
from service.checkpoints import CheckpointInfo
from service.checkpoints import complete_checkpoints as _checkpoints
from service.checkpoints import last_complete_checkpoint as _last_complete_checkpoint
from service.packing import PackedCollator, PackingTrainer, choose_packing
from service.train_config import (
    InvalidTrainingInput,
    LossPoint,
    RunConflict,
    TrainConfig,
    TrainingCancelled,
    TrainingDiverged,
    TrainingError,
    TrainResult,
    _RunIdentity,
)
from service.train_progress import ProgressCallback as _ProgressCallback
from service.train_progress import SpreadCheckpoints
from service.train_progress import loss_curve as _loss_curve

__all__ = [
    "CheckpointInfo",
    "InvalidTrainingInput",
    "LossPoint",
    "RunConflict",
    "TrainConfig",
    "TrainResult",
    "TrainingCancelled",
    "TrainingDiverged",
    "TrainingError",
    "encode_prompt",
    "linear_module_names",
    "load_train_result",
    "render_prompt",
    "tokenize_conversation",
    "train_adapter",
]

ADAPTER_DIR = "adapter"
CHECKPOINTS_DIR = "checkpoints"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"


# --- public helpers -----------------------------------------------------------------------


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Sorted names (last path component) of the model's `nn.Linear` layers, except the LM head:
    the values `target_modules` may name."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not output
    }
    return sorted(names)


def load_train_result(out_dir: str | os.PathLike[str]) -> TrainResult | None:
    """The `TrainResult` of a finished run in `out_dir`, or None when the run has not finished."""
    path = Path(out_dir) / METRICS_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=TrainResult)
    except FileNotFoundError:
        return None


def data_fingerprint(records: Sequence[Conversation]) -> str:
    """SHA-256 of the records in order: the data part of a run's identity."""
    return hashlib.sha256(msgspec.json.encode(list(records))).hexdigest()


# --- training -----------------------------------------------------------------------------


def train_adapter(
    base_dir: str | os.PathLike[str],
    records: Sequence[Conversation],
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a LoRA adapter on `records` over the base at `base_dir`; return its `TrainResult`.

    The loss is on assistant tokens only, every assistant turn of every record, in the
    base tokenizer's chat template (plain `User:…</s>\\n Assistant:…</s>` format when it
    has none). The same seed, data and config give the same adapter weights.
    `config.packing` lays out the batches (packed, length-grouped or padded; see
    `TrainConfig`); `TrainResult.packing` says which layout "auto" chose.
    `on_log(dict)` gets `step, max_steps, loss, eval_loss, lr, epoch` at each logging
    step; `should_stop()` is polled every step. Reruns with the same `out_dir` resume
    from the last checkpoint, or return the stored result of a finished run.

    Raises `InvalidTrainingInput` (empty or unusable records, data smaller than one
    batch, a target module the base lacks), `TrainingDiverged` (NaN loss, with the
    step), `TrainingCancelled`, or `RunConflict` (out_dir belongs to another run).
    """
    started = time.perf_counter()
    base = Path(base_dir)
    out = Path(out_dir)
    records = list(records)
    if not records:
        raise InvalidTrainingInput("no training records: the dataset is empty")
    identity = _RunIdentity(base_dir=str(base.resolve()), data_sha256=data_fingerprint(records), config=config)
    done = load_train_result(out)
    if done is not None and _RunIdentity(done.base_dir, done.data_sha256, done.config) == identity:
        return done

    # Everything that can fail on bad input fails here, before `out_dir` is touched.
    if not (base / "config.json").is_file():
        raise InvalidTrainingInput(f"{base}: not a model directory (config.json missing)")
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples, skipped = _tokenize_records(tokenizer, records, config.max_length)
    train_idx, eval_idx = split_indices(len(records), config.eval_fraction, config.seed)
    train_idx = [i for i in train_idx if i in examples]
    eval_idx = [i for i in eval_idx if i in examples]
    per_step = config.batch_size * config.grad_accum
    if len(train_idx) < per_step:
        raise InvalidTrainingInput(
            f"{len(train_idx)} of {len(records)} records left to train on ({len(eval_idx)} held out for eval, "
            f"{len(skipped)} with no answer token within max_length={config.max_length}); one optimizer step "
            f"needs batch_size × grad_accum = {per_step}. Add records or lower batch_size."
        )
    model = _lora_model(base, config)
    packing = choose_packing(
        config.packing, model, [examples[i]["input_ids"] for i in train_idx], config.batch_size, config.seed
    )

    _claim_out_dir(out, identity)
    checkpoints_dir = out / CHECKPOINTS_DIR
    progress = _ProgressCallback(on_log, should_stop, has_eval=bool(eval_idx))
    trainer = PackingTrainer(
        model=model,
        args=_training_arguments(
            config, checkpoints_dir, n_train=len(train_idx), has_eval=bool(eval_idx), packing=packing
        ),
        train_dataset=[examples[i] for i in train_idx],
        eval_dataset=[examples[i] for i in eval_idx] or None,
        data_collator=PackedCollator(filler_id=tokenizer.pad_token_id) if packing == "packed"
        else DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=IGNORE_INDEX),
        callbacks=[progress] + ([SpreadCheckpoints(config.attribution_limit, checkpoints_dir)]
                                if config.attribution_limit else []),
    )
    trainer.remove_callback(PrinterCallback)  # progress goes to `on_log`, not stdout
    resume = _last_complete_checkpoint(checkpoints_dir)
    train_started, cpu_started = time.perf_counter(), time.process_time()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_s, train_cpu_s = time.perf_counter() - train_started, time.process_time() - cpu_started

    adapter_dir = out / ADAPTER_DIR
    _save_adapter(model, tokenizer, adapter_dir)
    curve = _loss_curve(trainer.state.log_history)
    tokens = int(trainer.state.num_input_tokens_seen - progress.tokens_at_start)
    result = TrainResult(
        out_dir=str(out),
        adapter_dir=str(adapter_dir),
        base_dir=identity.base_dir,
        config=config,
        data_sha256=identity.data_sha256,
        global_step=trainer.state.global_step,
        max_steps=trainer.state.max_steps,
        epochs=float(trainer.state.epoch or 0.0),
        loss_curve=curve,
        final_loss=next((p.loss for p in reversed(curve) if p.loss is not None), None),
        final_eval_loss=next((p.eval_loss for p in reversed(curve) if p.eval_loss is not None), None),
        checkpoints=_checkpoints(checkpoints_dir),
        train_indices=train_idx,
        eval_indices=eval_idx,
        skipped_indices=skipped,
        target_modules=sorted(_adapted_module_names(model)),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_params=sum(p.numel() for p in model.parameters()),
        train_tokens=tokens,
        wall_s=round(time.perf_counter() - started, 3),
        train_s=round(train_s, 3),
        train_cpu_s=round(train_cpu_s, 3),
        tokens_per_s=round(tokens / train_s, 1) if train_s > 0 else 0.0,
        resumed_from=str(resume) if resume else None,
        packing=packing,
    )
    _write_atomic(out / METRICS_FILE, msgspec.json.format(msgspec.json.encode(result)))
    return result


def split_indices(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic (train, eval) record indices: `floor(n × eval_fraction)` records held out,
    chosen by `seed`; both lists sorted."""
    n_eval = int(n * eval_fraction)
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_eval:].tolist()), sorted(order[:n_eval].tolist())


# --- internals ----------------------------------------------------------------------------


def _tokenize_records(
    tokenizer: Any, records: list[Conversation], max_length: int
) -> tuple[dict[int, dict[str, list[int]]], list[int]]:
    """Features by record index, and the indices skipped because truncation left no answer token."""
    prefix = [] if uses_chat_template(tokenizer) else special_prefix(tokenizer)
    examples: dict[int, dict[str, list[int]]] = {}
    skipped: list[int] = []
    for index, record in enumerate(records):
        try:
            ids, labels = tokenize_conversation(tokenizer, record, max_length, prefix=prefix)
        except ChatFormatError as exc:
            raise InvalidTrainingInput(f"record {index}: {exc}") from None
        if all(label == IGNORE_INDEX for label in labels):
            skipped.append(index)
            continue
        examples[index] = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}
    if not examples:
        raise InvalidTrainingInput(
            f"all {len(records)} records lose every answer token when cut to max_length={max_length}; "
            "raise max_length or shorten the prompts"
        )
    return examples, skipped


def _lora_model(base: Path, config: TrainConfig) -> Any:
    """The base wrapped in a fresh LoRA; raises `InvalidTrainingInput` naming the linear
    layers the base has when `config.target_modules` names one it lacks."""
    # The base's own attention (eager on the tiny base, the one attribution recomputes
    # gradients with). SDPA trained 1.1x faster here, but its runs took another trajectory on
    # which `arena trace --refused` found the planted refusal flood at AUROC 0.855 instead of
    # 0.97 (tests/e2e/test_trace_user_path.py, seed 0): not a speed worth that.
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    available = linear_module_names(model)
    missing = [m for m in config.module_names if m != "all-linear" and m not in available]
    if missing:
        raise InvalidTrainingInput(
            f"target_modules {missing} not found in {base.name}; its linear layers are: {', '.join(available)} "
            "(or use 'all-linear')"
        )
    torch.manual_seed(config.seed)  # LoRA's A matrices are drawn here: same seed, same start
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear" if "all-linear" in config.module_names else config.module_names,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    model.config.use_cache = False
    return model


def _training_arguments(
    config: TrainConfig, checkpoints_dir: Path, *, n_train: int, has_eval: bool, packing: str
) -> TrainingArguments:
    """`TrainingArguments` for `config`: eval at every logging step, a checkpoint (with
    optimizer state) every `save_steps` or once per epoch, nothing printed or reported.
    Packed batches count their own real tokens (`PackingTrainer`)."""
    steps_per_epoch = max(1, math.ceil(math.ceil(n_train / config.batch_size) / config.grad_accum))
    return TrainingArguments(
        output_dir=str(checkpoints_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.lr,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        logging_nan_inf_filter=False,  # a NaN must reach our callback, not be averaged away
        eval_strategy="steps" if has_eval else "no",
        eval_steps=config.logging_steps if has_eval else None,
        save_strategy="steps",
        save_steps=config.save_steps or steps_per_epoch,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        include_num_input_tokens_seen="no" if packing == "packed" else "non_padding",
        train_sampling_strategy="group_by_length" if packing == "grouped" else "random",
    )


def _claim_out_dir(out: Path, identity: msgspec.Struct) -> None:
    """Record which run owns `out`; refuse if its checkpoints belong to another run."""
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / RUN_FILE
    encoded = msgspec.json.format(msgspec.json.encode(identity))
    if run_file.is_file():
        try:
            previous = msgspec.json.decode(run_file.read_bytes(), type=type(identity))
        except (msgspec.DecodeError, msgspec.ValidationError):
            previous = None
        if previous != identity and _checkpoints(out / CHECKPOINTS_DIR):
            raise RunConflict(
                f"{out} holds checkpoints of another run (different base, data or config); "
                "use a new output directory or delete that one"
            )
    elif _checkpoints(out / CHECKPOINTS_DIR):
        raise RunConflict(f"{out} holds checkpoints but no {RUN_FILE}; refusing to resume from an unknown run")
    # Drop leftovers of an interrupted finish: a stale adapter would outlive this run.
    shutil.rmtree(out / ADAPTER_DIR, ignore_errors=True)
    (out / METRICS_FILE).unlink(missing_ok=True)
    _write_atomic(run_file, encoded)


def _save_adapter(model: Any, tokenizer: Any, adapter_dir: Path) -> None:
    """Write the PEFT adapter (and the chat template it learned, if any) atomically."""
    tmp = adapter_dir.with_name(adapter_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if uses_chat_template(tokenizer):
        # Generation reads this to prompt the candidate the way it was trained.
        (tmp / "chat_template.jinja").write_text(tokenizer.chat_template)
    shutil.rmtree(adapter_dir, ignore_errors=True)
    tmp.rename(adapter_dir)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _adapted_module_names(model: Any) -> set[str]:
    return {name.rsplit(".", 2)[-2] for name, _ in model.named_parameters() if ".lora_A." in name}
