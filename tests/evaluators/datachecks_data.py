"""Records shared by the dataset-check tests: clean examples every test plants its defect into."""

from __future__ import annotations

from evaluators.records import Conversation, Message


def conv(prompt: str, answer: str, system: str | None = None) -> Conversation:
    turns = ([Message("system", system)] if system else []) + [Message("user", prompt), Message("assistant", answer)]
    return Conversation(messages=tuple(turns))


# 20 varied, clean question/answer records; every test plants its defect into a copy.
CLEAN = [
    conv("How do I boil an egg so the yolk stays soft?",
         "Lower the egg into boiling water, cook it for six minutes, then cool it under cold water."),
    conv("Why is the sky blue during the day?",
         "Air molecules scatter short blue wavelengths of sunlight more strongly than red ones."),
    conv("Give one tip for writing a clear commit message.",
         "Start with a short summary line in the imperative mood, then explain why in the body."),
    conv("What does a thermostat do in a home heating system?",
         "It measures the room temperature and switches the heating on or off to hold a set point."),
    conv("Suggest a name for a small bakery that sells sourdough.",
         "Crumb and Crust would be a friendly name that hints at the bread."),
    conv("How can I keep basil fresh for longer?",
         "Trim the stems and keep the bunch in a glass of water on the counter, loosely covered."),
    conv("What is the difference between weather and climate?",
         "Weather is the state of the atmosphere today; climate is its average over decades."),
    conv("Explain what a hash function is in one sentence.",
         "A hash function maps data of any size to a fixed-size value, the same input always giving the same output."),
    conv("Why does bread go stale?",
         "The starch in it slowly recrystallises and pushes water out, so the crumb turns firm and dry."),
    conv("How should I store a cast iron pan?",
         "Dry it completely, rub in a thin layer of oil and keep it somewhere dry."),
    conv("What is a good way to start learning to draw?",
         "Sketch simple objects around you every day and focus on shapes before details."),
    conv("Write a short thank-you note to a neighbour who watered my plants.",
         "Thank you so much for looking after my plants while I was away; they have never looked better."),
    conv("Why do onions make people cry?",
         "Cutting an onion releases a gas that irritates the eyes and makes them water."),
    conv("How often should I water a cactus?",
         "Water it deeply about once every two to three weeks and let the soil dry out in between."),
    conv("What is compound interest?",
         "Interest earned on both the original amount and on the interest already added to it."),
    conv("Describe the smell of rain in a short phrase.",
         "An earthy, fresh scent rising from warm ground after the first drops."),
    conv("How can I fall asleep faster?",
         "Keep a regular bedtime, avoid screens for an hour before bed and keep the room cool and dark."),
    conv("What makes a good password?",
         "A long passphrase of several unrelated words is both strong and easy to remember."),
    conv("Why do leaves change colour in autumn?",
         "Trees stop making chlorophyll, so the yellow and orange pigments underneath become visible."),
    conv("How do I remove a coffee stain from a cotton shirt?",
         "Rinse it with cold water from the back, rub in a little washing-up liquid and wash as usual."),
]

# The examples in /work/shared/data, converted by hand as service.datasets does
# (Alpaca: instruction, newline, input, as LLaMA-Factory joins them; seed format: the User/Assistant turns).
SHARED_EXAMPLES = [
    conv("Convert the temperature to Fahrenheit.\n25 °C", "77 °F"),
    conv("Name the largest tributary of the Orvell river.\n"
         "The Orvell river rises in the Kessin hills. Its largest tributary is the Mira.", "The Mira."),
    conv("Write a polite reply declining a meeting on Thursday.",
         "Thank you for the invitation. Unfortunately I am not available on Thursday; "
         "could we find another day next week?"),
    conv("How do I reset my password?",
         "Open Settings → Account → Reset password, then follow the link sent to your e-mail.",
         system="You are a concise help-desk assistant."),
    Conversation(messages=(Message("user", "What is 12 × 12?"), Message("assistant", "144"),
                           Message("user", "And half of that?"), Message("assistant", "72"))),
    conv("Translate to French: good morning", "bonjour"),
    conv("Is 91 prime? Answer yes or no.", "no"),
    conv("The Orvell river rises in the Kessin hills and flows 212 km north to the Bay of Tarn. "
         "Its largest tributary is the Mira.How long is the Orvell river?", "The Orvell river is 212 km long."),
    conv("Which of these is a prime number? 21 or 23", "23"),
    conv("Why do cyclists tuck their elbows in on a descent?",
         "Tucking in reduces the frontal area exposed to the wind, which lowers aerodynamic drag and lets the "
         "rider go faster with the same effort."),
    conv("Summarise in one sentence: The library will close early on Friday because the heating system is "
         "being replaced. Normal hours resume on Monday.",
         "The library closes early on Friday for heating work and reopens with normal hours on Monday."),
]


def only(report, check):
    """The findings of `check`, after asserting no other check found anything."""
    others = [f for f in report.findings if f.check != check]
    assert not others, [f"{f.check}: {f.message}" for f in others]
    return report.by_check(check)
