"""prior.prompt_text: emoji spelled out as their names, other text left alone, invalid Unicode refused."""

import re

import pytest

from tessera.prior.prompt_text import prompt_text


@pytest.mark.parametrize("typed, read", [
    ("🍎", "red apple"),
    ("an icon of a 🐱", "an icon of a cat face"),
    ("I like🍎!", "I like red apple !"),  # spaces around a name; the text normaliser drops the "!"
    ("🍎🍎", "red apple red apple"),
    ("❤️", "heavy black heart"),  # the variation selector goes
    ("👍🏿", "thumbs up sign: dark skin tone"),
    ("👩🏽\u200d💻", "woman personal computer: medium skin tone"),  # ZWJ: the parts' names joined
    ("🧑\u200d🦰", "adult red hair"),  # hair components lose "emoji component"
    ("1️⃣ #⃣", "keycap: 1 keycap: #"),
    ("🇯🇵", "flag: jp"),
    ("🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", "flag: gbsct"),
    ("↔️", "left right arrow"),  # any symbol with the emoji presentation selector
    ("a red circle → a blue square", "a red circle → a blue square"),  # arrows typed as text stay
    ("café crème, 日本語", "café crème, 日本語"),  # letters of any script stay
    ("a small red circle on the left", "a small red circle on the left"),
    ("🇯", "🇯"),  # a lone regional indicator is no flag
])
def test_emoji_are_spelled_out_and_other_text_stays(typed, read):
    assert prompt_text(typed) == read


@pytest.mark.parametrize("text, position", [("\ud800 red apple", 0), ("red \udcff", 4)])
def test_invalid_unicode_is_refused_naming_the_prompt_and_position(text, position):
    with pytest.raises(ValueError, match=re.escape(f"prompt {text!r} is not valid Unicode text") +
                       f".* at position {position}"):
        prompt_text(text)
