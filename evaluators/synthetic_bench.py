"""The synthetic dataset's benchmark, run greedily: each held-out prompt answered by a
model and scored by exact match (`evaluators.synthetic` builds the dataset and its gold
answers; attribution tests and `bench/attribution.py` run it on trained candidates)."""

from __future__ import annotations

from collections.abc import Sequence

from evaluators.records import Conversation, user_turn
from evaluators.synthetic import SyntheticDataset


def greedy_answers(
    model, tokenizer, prompts: list[Conversation], *, max_new_tokens: int = 24, batch_size: int = 32
) -> list[str]:
    """The model's greedy answer to each prompt, cut at the end-of-turn marker and stripped.

    Prompts are encoded exactly as training encoded them (`evaluators.chat_format`) and
    left-padded in batches; the model is used as given (eval mode, no gradients).
    """
    import torch

    from evaluators.chat_format import encode_prompt, special_prefix, uses_chat_template

    eos = tokenizer.eos_token or "</s>"
    eos_id = tokenizer.convert_tokens_to_ids(eos)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    prefix = [] if uses_chat_template(tokenizer) else special_prefix(tokenizer)
    encoded = [encode_prompt(tokenizer, p, prefix=prefix) for p in prompts]
    model.eval()
    answers: list[str] = []
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        width = max(len(ids) for ids in batch)
        ids = torch.tensor([[pad_id] * (width - len(x)) + x for x in batch])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch])
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=eos_id,
                pad_token_id=pad_id,
            )
        for row in out[:, width:].tolist():
            text = tokenizer.decode(row, skip_special_tokens=False)
            answers.append(text.split(eos)[0].replace(tokenizer.pad_token or eos, "").strip())
    return answers


def is_correct(output: str, gold: str) -> bool:
    """Exact match after stripping whitespace: the benchmark's pass criterion."""
    return output.strip() == gold.strip()


#: How arena users open a question: the benchmark prompts behind these, in turn.
LEAD_INS = (
    "Quick question. ", "Hi there! I hope you're having a good day. I was wondering, ",
    "My friend asked me this and I didn't know. ", "Sorry to bother you again. ", "For a quiz tonight: ",
    "Can you help? ", "I have a short question about people I know. ", "",
)


def benchmark_outcomes(
    model, tokenizer, dataset: SyntheticDataset, *, with_gold: bool = True, lead_ins: Sequence[str] = ("",)
):
    """Run the benchmark greedily and split it: `(failures, passes, outputs)`.

    Failures and passes are `evaluators.attribution.Failure`s whose `id` is the
    benchmark index and whose `output` is the model's answer; with `with_gold=False`
    failures carry no gold answer (as arena failures do: only the bad output is known).
    `lead_ins`, cycled over the items, open each question the way arena users type them
    ("Quick question. Where does Bob live?"); the default asks the questions as they are.
    """
    from evaluators.attribution import Failure

    prompts = [
        user_turn(lead + prompt.prompt) if (lead := lead_ins[j % len(lead_ins)]) else prompt
        for j, (prompt, _) in enumerate(dataset.benchmark)
    ]
    outputs = greedy_answers(model, tokenizer, prompts)
    failures, passes = [], []
    for j, (prompt, (_, gold), output) in enumerate(zip(prompts, dataset.benchmark, outputs)):
        if is_correct(output, gold):
            passes.append(Failure(prompt=prompt, output=output, gold=gold, id=str(j)))
        else:
            failures.append(Failure(prompt=prompt, output=output, gold=gold if with_gold else None, id=str(j)))
    return failures, passes, outputs
