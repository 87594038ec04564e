"""One batch of rows through `transformers.generate`: left-padded prompts, per-row sampling
and stops (`_decoding`), mixed adapters (PEFT's `adapter_names`), and, for rows with a
sink, the text streamed as it is generated (`RowStreamer`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers.generation.streamers import BaseStreamer

from service.generation._decoding import RowSampler, RowStops, cut_at_stop
from service.generation._models import Base, Candidate
from service.generation.items import GenItem, Generation
from service.generation.streaming import TextSink, settled_text


@dataclass(eq=False)
class Row:
    """One item of a caller's request, tokenized: `index` is its place in that request."""

    index: int
    candidate: Candidate
    input_ids: list[int]
    item: GenItem
    sink: TextSink | None = None


def generate_rows(base: Base, rows: list[Row], device: torch.device) -> list[Generation]:
    """The rows' answers, in order. Call under the backend's model lock, with the rows'
    adapters loaded. A row whose sink is cancelled stops at its next token."""
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

    params = [row.item.params for row in rows]
    width = max(len(row.input_ids) for row in rows)
    input_ids = torch.full((len(rows), width), base.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):  # left padding: every row's next token is at the end
        input_ids[i, width - len(row.input_ids) :] = torch.tensor(row.input_ids)
        mask[i, width - len(row.input_ids) :] = 1
    sinks = [row.sink for row in rows]
    stops = RowStops(width, params, base.eos_ids, base.decoder.decode,
                     cancelled=[sink.cancelled if sink is not None else None for sink in sinks])
    processors = LogitsProcessorList([] if all(p.greedy for p in params) else [RowSampler(params)])
    # Explicit neutral values, so a base's own generation_config (sampling, repetition
    # penalty) does not override what the caller asked for.
    config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max(p.max_new_tokens for p in params),
        min_new_tokens=0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        pad_token_id=base.pad_id,
        eos_token_id=sorted(base.eos_ids),
    )
    kwargs = {}
    if base.peft is not None:
        kwargs["adapter_names"] = [row.candidate.adapter_name for row in rows]
    if any(sink is not None for sink in sinks):
        kwargs["streamer"] = RowStreamer(
            sinks, [p.stop for p in params], lambda row: stops.finished_at[row],
            lambda ids: base.decoder.decode(ids, skip_special_tokens=True),
        )
    with torch.inference_mode():
        output = base.forward_model().generate(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            generation_config=config,
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([stops]),
            **kwargs,
        )
    output = output[:, width:].tolist()
    generations = []
    for i, row in enumerate(rows):
        count = stops.finished_at[i] if stops.finished_at[i] is not None else len(output[i])
        reason = stops.reasons[i] or "length"
        text = base.decoder.decode(output[i][:count], skip_special_tokens=True)
        text, stopped = cut_at_stop(text, row.item.params.stop)
        generations.append(
            Generation(
                model=row.item.model,
                text=text,
                finish_reason="stop" if stopped or reason == "cancelled" else reason,
                prompt_tokens=len(row.input_ids),
                completion_tokens=count,
            )
        )
    return generations


class RowStreamer(BaseStreamer):
    """A transformers streamer for a batch: `generate` puts the prompt ids once, then each
    step's new token per row; a row with a sink gets its decoded text so far, until its
    `finished_at()` count of tokens (eos, stop string or budget) is reached."""

    def __init__(self, sinks: Sequence[TextSink | None], stops: Sequence[Sequence[str]],
                 finished_at: Callable[[int], int | None], decode: Callable[[list[int]], str]) -> None:
        self._sinks = list(sinks)
        self._stops = list(stops)
        self._finished_at = finished_at
        self._decode = decode
        self._tokens: list[list[int]] = [[] for _ in self._sinks]
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # the first call carries the (padded) prompts
            self._prompt_seen = True
            return
        tokens = value.reshape(-1).tolist()
        for row, sink in enumerate(self._sinks):
            if sink is None or sink.closed:
                continue
            done = self._finished_at(row)
            if done is not None and len(self._tokens[row]) >= done:
                continue
            self._tokens[row].append(tokens[row])
            sink.update(settled_text(self._decode(self._tokens[row]), self._stops[row]))

    def end(self) -> None:
        """Nothing to flush: the backend finishes each sink with its final answer."""
