"""Generation in this process: one base model in memory per base directory, many LoRA
adapters on it, and mixed-adapter batches so the two sides of a battle (or a benchmark over
several candidates) share forward passes.

Concurrency: callers on any thread tokenize and validate their items, put them on a pending
list and wait; one generation thread takes everything pending at once (all callers' rows)
and runs it, so concurrent battles share batches, and no two forward passes ever overlap
(PEFT's `adapter_names` works by registering hooks on the shared modules, which must not
interleave). Log-likelihood scoring takes the same model lock on the caller's thread.

Streaming: an item given a `TextSink` gets its text as its row of the batch is generated
(`_batch.RowStreamer`, passed to `generate(streamer=...)`), and stops at the next token
once the sink is cancelled. One batch through `generate` lives in `_batch.py`.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from evaluators import chat_format
from evaluators.records import Conversation
from service.errors import InvalidInput, NotFound
from service.generation import _scoring
from service.generation._batch import Row as _Row
from service.generation._batch import generate_rows
from service.generation._models import Base, Candidate, ModelRegistry
from service.generation.items import (
    GenItem,
    Generation,
    Loglikelihood,
    LoglikelihoodItem,
    RollingItem,
    RollingLoglikelihood,
)
from service.generation.streaming import TextSink

#: How long the generation thread waits for work before exiting.
_WORKER_IDLE_S = 30.0


@dataclass(eq=False)
class _Request:
    rows: list[_Row]
    results: list[Generation | None]
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class InProcessBackend:
    """Serve registered candidates (base + LoRA adapter) and bases from this process.

    At most `max_adapters` adapters stay in memory (least recently used are deleted);
    `max_batch_size` rows share a forward pass. `max_new_tokens_cap` (the service's cap)
    is enforced on every item. Models load on first use; `device` defaults to CUDA when
    available, `dtype` to float32 on CPU and bfloat16 on CUDA.
    """

    def __init__(
        self,
        max_adapters: int = 8,
        *,
        max_batch_size: int = 32,
        max_new_tokens_cap: int | None = None,
        device: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.max_new_tokens_cap = max_new_tokens_cap
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self._models = ModelRegistry(max_adapters, self.device, self.dtype)
        self._model_lock = threading.Lock()  # held for every load and forward pass
        self._pending_changed = threading.Condition()  # guards `_pending` and `_worker`
        self._pending: list[_Request] = []
        self._worker: threading.Thread | None = None

    @property
    def max_adapters(self) -> int:
        """How many adapters may be in memory at once."""
        return self._models.max_adapters

    # -- registry ---------------------------------------------------------------------

    def register(self, name: str, base_dir: str | Path, adapter_dir: str | Path) -> None:
        """Make candidate `name` (a PEFT LoRA adapter directory on `base_dir`) available.
        Nothing is loaded yet. Re-registering a name with other files replaces it.
        Raises `NotFound` for a missing directory, `InvalidInput` for a non-LoRA adapter."""
        adapter_dir = Path(adapter_dir).resolve()
        config_path = adapter_dir / "adapter_config.json"
        if not config_path.is_file():
            raise NotFound(f"candidate {name!r}: {adapter_dir} has no adapter_config.json (not a PEFT adapter)")
        peft_type = json.loads(config_path.read_text()).get("peft_type")
        if peft_type != "LORA":
            raise InvalidInput(f"candidate {name!r}: adapter type {peft_type!r} is not LoRA; only LoRA can be served")
        self._unload(self._models.add(name, base_dir, adapter_dir))

    def register_base(self, name: str, base_dir: str | Path) -> None:
        """Make the bare base model in `base_dir` available under `name`."""
        self._unload(self._models.add(name, base_dir, None))

    def unregister(self, name: str) -> None:
        """Forget `name`, deleting its adapter from memory if loaded."""
        self._unload(self._models.remove(name))

    def models(self) -> list[str]:
        """Registered candidate and base names, sorted."""
        return self._models.names()

    def loaded_adapters(self) -> list[str]:
        """Candidates whose adapters are in memory, least recently used first."""
        return self._models.loaded()

    def context_length(self, model: str) -> int:
        """The model's context window in tokens (prompt + new tokens must fit in it)."""
        return self._models.prepared_base(self._models.get(model)).context_length

    def render(self, model: str, prompt: Conversation | str) -> str:
        """The exact text the model is given: a `Conversation` (without a final assistant
        turn) in the format the candidate was trained with (`evaluators.chat_format`: the
        base's chat template, else `render_plain`; an adapter that ships its own template
        uses that); a string unchanged. Use it as the prompt part of `cache_key`."""
        return self._render(self._models.get(model), prompt)[0]

    def _render(self, candidate: Candidate, prompt: Conversation | str) -> tuple[str, bool]:
        """(text, whether a chat template wrote it and so its special tokens)."""
        base = self._models.prepared_base(candidate)
        if isinstance(prompt, str):
            return prompt, False
        with base.tokenizer_lock:
            if candidate.chat_template is None:
                return chat_format.render_prompt(base.tokenizer, prompt), chat_format.uses_chat_template(base.tokenizer)
            messages = [{"role": m.role, "content": m.content} for m in prompt.prompt_messages]
            text = base.tokenizer.apply_chat_template(
                messages, chat_template=candidate.chat_template, tokenize=False, add_generation_prompt=True
            )
            return text, True

    def _unload(self, candidate: Candidate | None) -> None:
        if candidate is not None:
            with self._model_lock:
                self._models.unload(candidate)

    # -- generation -------------------------------------------------------------------

    def generate(self, items: Sequence[GenItem], sinks: Sequence[TextSink | None] | None = None) -> list[Generation]:
        """Answers for `items`, in order, generated in mixed-adapter batches. With `sinks`
        (one per item, or None), each item's text is streamed to its sink as it is generated
        and the sink is finished with the answer (or failed with the error).

        Raises before any work: `NotFound` (unknown model, listing the available ones),
        `InvalidInput` (over the new-token cap, or prompt + max_new_tokens over the context).
        A greedy answer is the answer generated alone, whatever else shares its batch, and
        so is a sampled one with a `seed` (each sampled row has its own generator). That is
        exact in float32; in bfloat16 on GPU, batch shape can flip a near-tie.
        """
        sinks = list(sinks) if sinks is not None else [None] * len(items)
        try:
            rows = [self._prepare(index, item, sink) for index, (item, sink) in enumerate(zip(items, sinks))]
        except BaseException as exc:
            _fail_sinks(sinks, exc)
            raise
        for sink in sinks:
            if sink is not None:
                sink.accept()
        if not rows:
            return []
        request = _Request(rows=rows, results=[None] * len(rows))
        with self._pending_changed:
            self._pending.append(request)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="generation", daemon=True)
                self._worker.start()
            self._pending_changed.notify()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.results  # type: ignore[return-value]

    def _work(self) -> None:
        """The generation thread: take everything pending, run it, repeat; exit when idle
        (the next `generate` starts a new one)."""
        while True:
            with self._pending_changed:
                if not self._pending:
                    self._pending_changed.wait(timeout=_WORKER_IDLE_S)
                if not self._pending:
                    self._worker = None
                    return
                pending, self._pending = self._pending, []
            with self._model_lock:
                self._execute(pending)

    def _prepare(self, index: int, item: GenItem, sink: TextSink | None = None) -> _Row:
        item.params.check_cap(self.max_new_tokens_cap)
        candidate = self._models.get(item.model)
        base = self._models.prepared_base(candidate)
        text, templated = self._render(candidate, item.prompt)
        with base.tokenizer_lock:
            ids = base.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not templated:  # plain text gets the leading special tokens training gave it
            ids = base.prefix_ids + ids
        if not ids:
            raise InvalidInput(f"{item.model}: the prompt is empty")
        limit = base.context_length - item.params.max_new_tokens
        if len(ids) > limit:
            raise InvalidInput(
                f"prompt is {len(ids)} tokens; the limit for {item.model} is {max(limit, 0)} "
                f"with max_new_tokens={item.params.max_new_tokens} (context length {base.context_length})",
                limit=max(limit, 0),
            )
        return _Row(index=index, candidate=candidate, input_ids=ids, item=item, sink=sink)

    def _execute(self, requests: list[_Request]) -> None:
        """Run every pending request's rows, grouped by base, sorted by candidate and prompt
        length, in batches of at most `max_batch_size` rows and `max_adapters` adapters."""
        try:
            by_base: dict[Base, list[tuple[_Request, _Row]]] = {}
            for request in requests:
                for row in request.rows:
                    by_base.setdefault(row.candidate.base, []).append((request, row))
            for base, pairs in by_base.items():
                try:
                    self._models.load_model(base)
                except Exception as exc:  # noqa: BLE001 - handed to the callers that need this base
                    _fail({request for request, _ in pairs}, exc)
                    continue
                # Candidate first, then prompt length: a batch holds as few adapters as the
                # rows allow (each adapter in a batch costs PEFT a gather + scatter per layer),
                # and rows of similar length (little padding).
                pairs.sort(key=lambda pair: (pair[1].candidate.name, len(pair[1].input_ids)))
                for positions in self._batches([row.candidate for _, row in pairs]):
                    batch = [pairs[p] for p in positions if pairs[p][0].error is None]
                    if batch:
                        self._run_batch(base, batch)
        finally:
            for request in requests:
                if request.error is None and any(result is None for result in request.results):
                    request.error = RuntimeError("generation was interrupted before this request's answers")
                for row in request.rows:
                    if row.sink is None:
                        continue
                    if request.error is not None:
                        row.sink.fail(request.error)
                    else:
                        row.sink.finish(request.results[row.index])
                request.done.set()

    def _batches(self, candidates: Sequence[Candidate]):
        """Split positions 0..n-1 (in order) into batches of at most `max_batch_size` rows
        using at most `max_adapters` distinct adapters, so a batch's adapters fit in memory."""
        batch: list[int] = []
        adapters: set[str] = set()
        for position, candidate in enumerate(candidates):
            name = candidate.name if candidate.adapter_dir else None
            new_adapter = name is not None and name not in adapters
            full = len(batch) >= self.max_batch_size or (new_adapter and len(adapters) >= self.max_adapters)
            if batch and full:
                yield batch
                batch, adapters = [], set()
            batch.append(position)
            if name is not None:
                adapters.add(name)
        if batch:
            yield batch

    def _run_batch(self, base: Base, batch: list[tuple[_Request, _Row]]) -> None:
        needed = {row.candidate.name: row.candidate for _, row in batch if row.candidate.adapter_dir}
        for candidate in needed.values():
            try:
                self._models.load_adapter(candidate, keep=needed.keys())
            except Exception as exc:  # noqa: BLE001
                _fail({request for request, row in batch if row.candidate is candidate}, exc)
        batch = [(request, row) for request, row in batch if request.error is None]
        if not batch:
            return
        try:
            generations = self._generate_rows(base, [row for _, row in batch])
        except Exception as exc:  # noqa: BLE001
            _fail({request for request, _ in batch}, exc)
            return
        for (request, row), generation in zip(batch, generations):
            request.results[row.index] = generation

    def _generate_rows(self, base: Base, rows: list[_Row]) -> list[Generation]:
        return generate_rows(base, rows, self.device)

    # -- log-likelihood -----------------------------------------------------------------

    def loglikelihood(self, items: Sequence[LoglikelihoodItem]) -> list[Loglikelihood]:
        """log p(continuation | context) per item, in order (lm-eval's `loglikelihood`),
        in mixed-adapter batches. A context is raw text, which gets the base's leading special
        tokens as in training, or a `Conversation`, rendered with the candidate's template. A context
        too long for the model is cut from the left."""
        pairs = []
        for item in items:
            candidate = self._models.get(item.model)
            base = self._models.prepared_base(candidate)
            context, templated = self._render(candidate, item.context)
            prefix = [] if templated else base.prefix_ids
            with base.tokenizer_lock:
                pair = _scoring.encode_pair(
                    lambda text: prefix + base.tokenizer(text, add_special_tokens=False)["input_ids"],
                    context,
                    item.continuation,
                )
            pairs.append(_scoring.fit_to_context(pair, base.context_length, base.prefix_id, item.model))
        scores = self._score([item.model for item in items], pairs)
        return [Loglikelihood(logprob, greedy, len(pair[1])) for (logprob, greedy), pair in zip(scores, pairs)]

    def loglikelihood_rolling(self, items: Sequence[RollingItem]) -> list[RollingLoglikelihood]:
        """Total log-probability of each text over context-sized windows (lm-eval's
        `loglikelihood_rolling`, for perplexity), with the number of tokens scored."""
        models, pairs, owners = [], [], []
        for index, item in enumerate(items):
            base = self._models.prepared_base(self._models.get(item.model))
            with base.tokenizer_lock:
                ids = base.tokenizer(item.text, add_special_tokens=False)["input_ids"]
            for pair in _scoring.rolling_windows(ids, base.prefix_id, base.context_length):
                models.append(item.model)
                pairs.append(pair)
                owners.append(index)
        totals = [0.0] * len(items)
        counts = [0] * len(items)
        for owner, pair, (logprob, _) in zip(owners, pairs, self._score(models, pairs)):
            totals[owner] += logprob
            counts[owner] += len(pair[1])
        return [RollingLoglikelihood(total, count) for total, count in zip(totals, counts)]

    def _score(self, models: list[str], pairs: list[_scoring.TokenPair]) -> list[tuple[float, bool]]:
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        candidates = [self._models.get(model) for model in models]
        order = sorted(range(len(pairs)), key=lambda i: (id(candidates[i].base), -sum(map(len, pairs[i]))))
        with self._model_lock:
            for _, group in itertools.groupby(order, key=lambda i: id(candidates[i].base)):
                group = list(group)
                base = candidates[group[0]].base
                self._models.load_model(base)
                for positions in self._batches([candidates[i] for i in group]):
                    indices = [group[p] for p in positions]
                    needed = {candidates[i].name: candidates[i] for i in indices if candidates[i].adapter_dir}
                    for candidate in needed.values():
                        self._models.load_adapter(candidate, keep=needed.keys())
                    names = None
                    if base.peft is not None:
                        names = [candidates[i].adapter_name for i in indices]
                    model = base.forward_model()
                    with torch.inference_mode():
                        scores = _scoring.score_pairs(
                            lambda **kw: model(**kw).logits,
                            [pairs[i] for i in indices],
                            names,
                            base.pad_id,
                            self.device,
                        )
                    for i, score in zip(indices, scores):
                        results[i] = score
        return results  # type: ignore[return-value]


def _fail_sinks(sinks: Sequence[TextSink | None], exc: BaseException) -> None:
    for sink in sinks:
        if sink is not None:
            sink.fail(exc)


def _fail(requests, exc: BaseException) -> None:
    for request in requests:
        if request.error is None:
            request.error = exc
