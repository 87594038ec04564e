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
