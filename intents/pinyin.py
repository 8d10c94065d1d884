"""Toneless pinyin of Chinese characters, one syllable per character, cached."""

from __future__ import annotations

import functools

from pypinyin import Style, lazy_pinyin


def is_han(char: str) -> bool:
    """A CJK unified ideograph."""
    return "\u4e00" <= char <= "\u9fff" or "\u3400" <= char <= "\u4dbf"


@functools.lru_cache(maxsize=65536)
def syllable(char: str) -> str:
    """The toneless pinyin of one Chinese character (its most common reading); '' for others."""
    if not is_han(char):
        return ""
    spelled = lazy_pinyin(char, style=Style.NORMAL, errors="ignore")
    return spelled[0] if spelled else ""


def spell(text: str) -> str:
    """Toneless pinyin of the Chinese characters of `text`, run together ('优惠' -> 'youhui')."""
    return "".join(syllable(c) for c in text)


def syllables(text: str) -> tuple[str, ...]:
    """One syllable per character ('' for a character that is not Chinese)."""
    return tuple(syllable(c) for c in text)
