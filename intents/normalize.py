"""Normalise customer text before matching: simplified, half-width, lower-case, no emoji."""

from __future__ import annotations

import re
import unicodedata

import opencc

MAX_CHARS = 500

_t2s = opencc.OpenCC("t2s")

# Control chars, lone surrogates (from broken decoding), private use, U+FFFD, emoji and pictographs,
# dingbats, variation selectors, zero-width joiners and tag characters.
_JUNK = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202f\u2060-\u206f"
    "\u2190-\u21ff\u2300-\u23ff\u25a0-\u27bf\u2b00-\u2bff\ud800-\udfff\ue000-\uf8ff\ufe00-\ufe0f\ufffd"
    "\U0001f000-\U0001faff\U000e0000-\U000e007f]+"
)
_REPEATED_PUNCT = re.compile(r"([^\w\s])\1+")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Traditional->simplified, full-width->half-width, lower-case, emoji stripped, punctuation runs collapsed."""
    text = _JUNK.sub(" ", text[:MAX_CHARS])
    text = _t2s.convert(text)
    if not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    text = text.lower()
    text = _REPEATED_PUNCT.sub(r"\1", text)
    return _SPACES.sub(" ", text).strip()
