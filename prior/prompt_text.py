"""Text as people type it, before the text tokenizer: emoji spelled out as their names, invalid Unicode refused.

``prompt_text("🍎")`` is ``"red apple"``: an emoji is replaced by its Unicode character name in lower case
(``unicodedata.name``), which is the CLDR short name the emoji data captions carry in most cases ("red apple",
"cat face", "grinning face"). No data file is read. Sequences:

- variation selectors (U+FE0E, U+FE0F) are dropped: "❤️" is "heavy black heart";
- skin-tone modifiers become CLDR's ": medium skin tone" after the name (``SKIN_TONES``);
- a ZWJ sequence joins its parts' names: "👩‍💻" is "woman personal computer"; hair components say "red hair";
- a keycap ("1️⃣") is "keycap: 1";
- a flag (two regional indicators, "🇫🇷") is "flag: fr"; a subdivision flag (black flag + tag letters) is
  "flag: gbeng". The standard library has no country names, so the letters stand for the country.

An emoji is a symbol (Unicode category "So") in the emoji blocks (``EMOJI_BLOCKS``), or any symbol followed by the
emoji presentation selector U+FE0F. Each one is spelled out with spaces around it and runs of whitespace are
collapsed, so "I like🍎!" reads "I like red apple !". ASCII text is returned as it is (the fast path).

A string that is not valid Unicode text (a lone surrogate such as "\\ud800", which is how Python carries an invalid
byte of a command line) cannot be encoded by any tokenizer: ``ValueError`` naming the prompt and the position.
"""

from __future__ import annotations

import unicodedata

VARIATION_SELECTORS = {"\ufe0e", "\ufe0f"}
ZERO_WIDTH_JOINER = "\u200d"
KEYCAP = "\u20e3"
KEYCAP_BASES = set("0123456789#*")
SKIN_TONES = {  # Fitzpatrick modifiers U+1F3FB..U+1F3FF by their CLDR names
    "\U0001f3fb": "light skin tone", "\U0001f3fc": "medium-light skin tone", "\U0001f3fd": "medium skin tone",
    "\U0001f3fe": "medium-dark skin tone", "\U0001f3ff": "dark skin tone",
}
REGIONAL_INDICATORS = range(0x1F1E6, 0x1F1FF + 1)  # A..Z
TAGS = range(0xE0020, 0xE007F)  # tag characters, ended by CANCEL TAG U+E007F
CANCEL_TAG = "\U000e007f"
# Unicode blocks whose symbols are emoji (misc technical, geometric shapes, misc symbols, dingbats, misc symbols and
# arrows, CJK emoji, the supplementary pictographs). Arrows, box drawing and other symbols people type as text stay
# as they are unless followed by U+FE0F.
EMOJI_BLOCKS = ((0x2300, 0x23FF), (0x25A0, 0x25FF), (0x2600, 0x27BF), (0x2B00, 0x2BFF), (0x3030, 0x303D),
                (0x3297, 0x3299), (0x1F000, 0x1FAFF))


def check_unicode(text: str, name: str = "prompt") -> str:
    """``text`` if it encodes as UTF-8, else ``ValueError`` naming it and the first lone surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{name} {text!r} is not valid Unicode text: a lone surrogate U+{ord(text[error.start]):04X} "
                         f"at position {error.start} (an invalid byte in the input, e.g. text that is not UTF-8); "
                         "re-type it or save it as UTF-8") from None
    return text


def prompt_text(text: str, name: str = "prompt") -> str:
    """``text`` checked (``check_unicode``) with its emoji spelled out as names (see the module docstring)."""
    if not isinstance(text, str) or text.isascii():  # other types are the caller's to refuse
        return text
    check_unicode(text, name)
    pieces, position, changed = [], 0, False
    while position < len(text):
        end, spelled = _emoji_at(text, position)
        if spelled is None:
            pieces.append(text[position])
        else:
            pieces.append(f" {spelled} ")
            changed = True
        position = end
    return " ".join("".join(pieces).split()) if changed else text


def prompt_texts(texts: list[str], name: str = "prompt") -> list[str]:
    return [prompt_text(text, name) for text in texts]


def _is_emoji(character: str) -> bool:
    code = ord(character)
    return (unicodedata.category(character) == "So" and code not in REGIONAL_INDICATORS
            and any(low <= code <= high for low, high in EMOJI_BLOCKS))


def _character_name(character: str) -> str:
    name = unicodedata.name(character, "").lower()
    return name.removeprefix("emoji component ")


def _emoji_at(text: str, start: int) -> tuple[int, str | None]:
    """(end, spelled-out name) of the emoji sequence starting at ``start``, or (start + 1, None) if none does."""
    first = text[start]
    following = text[start + 1] if start + 1 < len(text) else ""
    if ord(first) in REGIONAL_INDICATORS and following and ord(following) in REGIONAL_INDICATORS:
        letters = "".join(chr(ord(c) - REGIONAL_INDICATORS.start + ord("a")) for c in (first, following))
        return start + 2, f"flag: {letters}"
    if first in KEYCAP_BASES:
        end = start + 1 + (following in VARIATION_SELECTORS)
        if end < len(text) and text[end] == KEYCAP:
            return end + 1, f"keycap: {first}"
        return start + 1, None
    if not (_is_emoji(first) or (following == "\ufe0f" and unicodedata.category(first).startswith("S"))):
        return start + 1, None
    names, tones, position = [], [], start
    while True:  # one part of a ZWJ sequence per round
        names.append(_character_name(text[position]))
        position += 1
        while position < len(text) and (text[position] in VARIATION_SELECTORS or text[position] in SKIN_TONES):
            if text[position] in SKIN_TONES and SKIN_TONES[text[position]] not in tones:
                tones.append(SKIN_TONES[text[position]])
            position += 1
        if position < len(text) and ord(text[position]) in TAGS:  # a subdivision flag: black flag + tag letters
            letters = ""
            while position < len(text) and ord(text[position]) in TAGS:
                letters += chr(ord(text[position]) - 0xE0000)
                position += 1
            position += position < len(text) and text[position] == CANCEL_TAG
            return position, f"flag: {letters.lower()}"
        if (position + 1 < len(text) and text[position] == ZERO_WIDTH_JOINER
                and unicodedata.category(text[position + 1]) == "So"):
            position += 1
            continue
        break
    spelled = " ".join(name for name in names if name)
    return position, spelled + (f": {', '.join(tones)}" if tones else "")
