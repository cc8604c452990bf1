"""Semantics-preserving caption variation for any data: the same words typed the way people type them
(``typed_noise``), and the same caption said the way people ask for a picture of it (``prompt_variant``).

``prompt_variant`` works on free-text captions (names, short descriptions) of any data:

- a **lead-in or tail** as people type prompts ("an emoji of ...", "draw ...", "... icon"); the
  ``HELD_OUT_PROMPT_TEMPLATES`` are never drawn, so that ``benchmarks`` can measure how a model trained with
  the others reads a way of asking it never saw;
- a caption shaped **"X: Y"** (a name with a qualifier: "flag: Japan", "waving hand: dark skin tone") said
  without the colon ("flag Japan") or qualifier first ("Japan flag", "dark skin tone waving hand");
- **alternative words** for the same image (tags, keywords, other captions of a multi-caption dataset) appended
  at the end ("red apple, fruit", "an icon of a red apple, fruit"); an alternative whose words the prompt
  already says adds nothing and is left out, and the caption itself is always kept, since alternatives are often
  shared by many images;
- typing noise on top (``typed_noise``).

Every choice comes from the ``rng`` it is given, so a variant is a function of the seed that made the rng.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence


def _choose(rng: random.Random, options: tuple[str, ...]) -> str:
    return options[rng.randrange(len(options))]


def typed_noise(text: str, rng: random.Random) -> str:
    """The same text as someone might type it: capitalised, title case or upper case, a full stop or an
    exclamation mark, a comma, doubled spaces. The words do not change."""
    words = text.split(" ")
    casing = rng.randrange(4)
    if casing == 1:
        words[0] = words[0][:1].upper() + words[0][1:]
    elif casing == 2:
        words = [word[:1].upper() + word[1:] for word in words]
    elif casing == 3:
        words = [word.upper() for word in words]
    if len(words) > 2 and rng.random() < 0.3:
        cut = rng.randrange(1, len(words) - 1)
        words[cut] += ","
    separator = "  " if rng.random() < 0.2 else " "
    return separator.join(words) + _choose(rng, ("", ".", "!", " .", "..."))


# "{}" is the subject; "{a}" its article ("a" or "an"). Each held-out template has a word no training template
# has (picture, sticker, give, illustration: HELD_OUT_PROMPT_WORDS), so a prompt made with it is recognisable.
TRAINING_PROMPT_TEMPLATES = ("{a} {}", "an emoji of {a} {}", "{} emoji", "an icon of {a} {}", "{} icon",
                             "draw {a} {}", "show me {a} {}", "{a} {} symbol", "a drawing of {a} {}",
                             "an image of {a} {}", "a cartoon {}", "emoji {}")
HELD_OUT_PROMPT_TEMPLATES = ("a picture of {a} {}", "{} sticker", "give me {a} {}", "an illustration of {a} {}")
HELD_OUT_PROMPT_WORDS = ("picture", "sticker", "give", "illustration")
LEAD_IN_SHARE = 0.6  # of the variants that get a lead-in or tail
REORDER_SHARE = 0.5  # of the "X: Y" captions whose variant drops the colon or puts Y first
ALTERNATIVES_SHARE = 0.5  # of the variants (of a caption with alternatives) that append some
MAX_ALTERNATIVES = 2  # appended to one variant
NOISE_SHARE = 0.3  # of the variants typed with noise


def _words(text: str) -> set[str]:
    return set(re.findall(r"[\w'-]+", text.lower()))


def article(text: str) -> str:
    """"an" before a vowel letter, else "a" (by spelling: "an hour" and "a unicorn" are not special-cased)."""
    return "an" if text[:1].lower() in "aeiou" else "a"


def fill_template(template: str, subject: str) -> str:
    return template.replace("{a}", article(subject)).replace("{}", subject)


def reordered(caption: str, rng: random.Random) -> str:
    """A caption "X: Y" as "X Y" or "Y X" (half each); any other caption as it is."""
    head, colon, tail = caption.partition(": ")
    if not colon or not head.strip() or not tail.strip():
        return caption
    return f"{head} {tail}" if rng.random() < 0.5 else f"{tail} {head}"


def with_alternatives(subject: str, alternatives: Sequence[str], rng: random.Random) -> str:
    """``subject`` followed by one or two of ``alternatives`` that say something it does not, comma-separated."""
    said = _words(subject)
    new = [text.strip() for text in alternatives if text.strip() and not _words(text) <= said]
    new = list(dict.fromkeys(new))
    if not new:
        return subject
    picked = rng.sample(new, min(len(new), rng.randint(1, MAX_ALTERNATIVES)))
    return ", ".join([subject, *picked])


def prompt_variant(caption: str, rng: random.Random, alternatives: Sequence[str] = (),
                   templates: tuple[str, ...] = TRAINING_PROMPT_TEMPLATES) -> str:
    """One way someone might ask for an image captioned ``caption`` (see the module docstring); ``alternatives``:
    other words for the same image. ``templates``: the lead-ins and tails to draw from (``HELD_OUT_PROMPT_TEMPLATES``
    to make evaluation prompts training never saw)."""
    subject = reordered(caption, rng) if rng.random() < REORDER_SHARE else caption
    text = fill_template(_choose(rng, templates), subject) if rng.random() < LEAD_IN_SHARE else subject
    if alternatives and rng.random() < ALTERNATIVES_SHARE:
        text = with_alternatives(text, alternatives, rng)  # "an icon of a red apple, fruit"
    return typed_noise(text, rng) if rng.random() < NOISE_SHARE else text
