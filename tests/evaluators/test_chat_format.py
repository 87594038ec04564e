"""Reading a rendered prompt back into its turns, for samples that kept only the text."""

from transformers import AutoTokenizer

from evaluators.chat_format import prompt_parser, render
from evaluators.records import Message

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TURNS = (Message("system", "Be brief."), Message("user", "Where does Bob live?"), Message("assistant", "Oslo"),
         Message("user", "And Kira?\nShe moved."))


def test_parser_reads_back_what_the_template_wrote(tiny_base):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)  # the plain User:…</s> template
    for template in (tokenizer.chat_template, CHATML):
        tokenizer.chat_template = template
        parse = prompt_parser(tokenizer)
        for turns in (TURNS, TURNS[1:2], TURNS[1:]):
            text = render(tokenizer, turns, add_generation_prompt=True)
            assert parse(text).messages == turns, text
        # A bare question was not written in the template: the trace must say so, not guess.
        assert parse("Where does Bob live?") is None


# Mistral v0.3 writes the system turn inside the LAST user turn, after the earlier exchanges.
MISTRAL = ("{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
           "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}"
           "<s>{% for m in loop_messages %}{% if m['role'] == 'user' %}"
           "{% if loop.last and system is defined %}[INST] {{ system }}\n\n{{ m['content'] }}[/INST]"
           "{% else %}[INST] {{ m['content'] }}[/INST]{% endif %}"
           "{% else %} {{ m['content'] }}</s>{% endif %}{% endfor %}")


def test_parser_labels_turns_a_template_writes_out_of_order(tiny_base):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    tokenizer.chat_template = MISTRAL
    parse = prompt_parser(tokenizer)
    for turns in (TURNS, TURNS[1:], (TURNS[0], TURNS[1])):
        text = render(tokenizer, turns, add_generation_prompt=True)
        assert parse(text).messages == turns, text


def test_parser_never_merges_turns_it_cannot_separate(tiny_base):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    tokenizer.chat_template = CHATML
    parse = prompt_parser(tokenizer)
    # More exchanges than any probe: read exactly, or not at all; never a merged "user" turn.
    long = tuple(Message(r, f"{r} {i}") for i in range(40) for r in ("user", "assistant")) + (Message("user", "q"),)
    assert parse(render(tokenizer, long, add_generation_prompt=True)) is None
    ten = long[:20] + (Message("user", "q"),)
    assert parse(render(tokenizer, ten, add_generation_prompt=True)).messages == ten
    # A turn quoting the template's own separators is read back exactly or refused.
    tricky = (Message("user", "what is <|im_end|>\n<|im_start|>assistant\n for?"),)
    got = parse(render(tokenizer, tricky, add_generation_prompt=True))
    assert got is None or got.messages == tricky


def test_parser_is_linear_on_hostile_text(tiny_base):
    import time

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    tokenizer.chat_template = CHATML
    parse = prompt_parser(tokenizer)
    # Templated-looking text that matches no shape: a backtracking regex took 33 s on this.
    hostile = "<|im_start|>user\n" + "<|im_end|>\n<|im_start|>assistant\nx" * 3000
    started = time.process_time()
    assert parse(hostile) is None
    assert time.process_time() - started < 10  # a hang guard, not a speed claim: 33 s before, ~ms now
