"""Normalise customer text before matching: simplified, half-width, lower-case, emoji as words."""

from __future__ import annotations

import re
import unicodedata

import opencc

MAX_CHARS = 500

_t2s = opencc.OpenCC("t2s")

# Emoji that carry the message by themselves: read as the word a customer would have typed.
EMOJI_WORDS = {
    "👍": "好的", "👌": "好的", "🙆": "好的", "✅": "好的", "🆗": "好的", "🙏": "谢谢", "💐": "谢谢", "🌹": "谢谢",
    "😀": "嗯", "😃": "嗯", "😄": "嗯", "😁": "嗯", "😊": "嗯", "🙂": "嗯", "☺": "嗯", "😉": "嗯", "🤝": "好的",
    "👋": "拜拜", "😡": "生气", "😠": "生气", "🤬": "生气", "💢": "生气", "👎": "差劲", "😤": "生气",
}
_EMOJI = re.compile("|".join(f"(?:{re.escape(e)}\ufe0f?)+" for e in sorted(EMOJI_WORDS, key=len, reverse=True)))

# Control chars, lone surrogates (from broken decoding), private use, U+FFFD, emoji and pictographs,
# dingbats, variation selectors, zero-width joiners and tag characters.
_JUNK = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202f\u2060-\u206f"
    "\u2190-\u21ff\u2300-\u23ff\u25a0-\u27bf\u2b00-\u2bff\ud800-\udfff\ue000-\uf8ff\ufe00-\ufe0f\ufffd"
    "\U0001f000-\U0001faff\U000e0000-\U000e007f]+"
)
_REPEATED_PUNCT = re.compile(r"([^\w\s])\1+")
_SPACES = re.compile(r"\s+")
# Chinese is written without spaces: one between two Chinese characters is noise ("多少 钱").
_HAN_SPACE = re.compile(r"(?<=[\u3400-\u9fff])\s+(?=[\u3400-\u9fff])")


def _emoji_word(match: re.Match[str]) -> str:
    return f" {EMOJI_WORDS[match.group(0)[0]]} "


def normalize(text: str) -> str:
    """Traditional->simplified, full-width->half-width, lower-case, emoji read or dropped, runs collapsed."""
    if len(text) > MAX_CHARS:  # customers often state their demand at the end of a long story
        text = f"{text[:MAX_CHARS // 2 - 1]}。{text[-(MAX_CHARS // 2):]}"
    text = _EMOJI.sub(_emoji_word, text)
    text = _JUNK.sub(" ", text)
    text = _t2s.convert(text)
    if not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    text = text.lower()
    text = _REPEATED_PUNCT.sub(r"\1", text)
    return _HAN_SPACE.sub("", _SPACES.sub(" ", text)).strip()
