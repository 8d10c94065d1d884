"""Toneless pinyin of Chinese characters, one syllable per character, from pypinyin's character table.

Importing the pypinyin package costs ~57 MB (its phrase dictionary); one reading per character
is all the router needs, so only the package's character table is loaded (a few MB).
"""

from __future__ import annotations

import functools
import importlib.util
import unicodedata
from pathlib import Path


def is_han(char: str) -> bool:
    """A CJK unified ideograph."""
    return "\u4e00" <= char <= "\u9fff" or "\u3400" <= char <= "\u4dbf"


@functools.cache
def _table() -> dict[int, str]:
    """pypinyin's code point -> readings table ('líng,yuán,xīng'), without importing the package."""
    spec = importlib.util.find_spec("pypinyin")
    assert spec is not None and spec.submodule_search_locations, "pypinyin is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / "pinyin_dict.py"
    module_spec = importlib.util.spec_from_file_location("_wecom_pinyin_table", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    table: dict[int, str] = module.pinyin_dict
    return table


def _toneless(reading: str) -> str:
    """'lǘ' -> 'lv', 'yuán' -> 'yuan' (as pypinyin's NORMAL style writes them)."""
    reading = reading.replace("ü", "v").replace("ǖ", "v").replace("ǘ", "v").replace("ǚ", "v").replace("ǜ", "v")
    return "".join(c for c in unicodedata.normalize("NFD", reading) if not unicodedata.combining(c))


@functools.lru_cache(maxsize=65536)
def syllable(char: str) -> str:
    """The toneless pinyin of one Chinese character (its most common reading); '' for others."""
    if not is_han(char):
        return ""
    readings = _table().get(ord(char))
    return _toneless(readings.split(",", 1)[0]) if readings else ""


@functools.cache
def _syllable_set() -> frozenset[str]:
    """Every toneless syllable of the table."""
    return frozenset(_toneless(r) for readings in _table().values() for r in readings.split(","))


@functools.lru_cache(maxsize=4096)
def is_pinyin(word: str) -> bool:
    """True when a Latin word splits into pinyin syllables ("zhuanrengong" yes, "need" no)."""
    valid, size = _syllable_set(), len(word)
    ok = [True] + [False] * size
    for end in range(1, size + 1):
        ok[end] = any(ok[start] and word[start:end] in valid for start in range(max(0, end - 6), end))
    return ok[size]


def spellings(word: str, limit: int = 16) -> set[str]:
    """Every reading of a word run together, for polyphonic characters too (便宜: bianyi, pianyi)."""
    out = [""]
    for char in word:
        readings = _table().get(ord(char), "")
        options = list(dict.fromkeys(_toneless(r) for r in readings.split(",") if r)) or [""]
        out = [head + tail for head in out for tail in options][:limit]
    return set(out)
