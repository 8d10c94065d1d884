"""The model's text features of one message: character n-grams, jieba tokens, syllable pairs."""

from __future__ import annotations

from .pinyin import is_han, syllable

_PUNCT = set(" ,.!?;:~，。！？；：、…()（）【】[]\"'“”‘’-—_/\\|")


def features(norm: str, tokens: list[str]) -> list[str]:
    """Feature names of a normalised message (duplicates allowed; the model counts each once)."""
    text = "".join(c for c in norm if c not in _PUNCT)
    out = [f"c1:{c}" for c in text if not c.isascii()]
    padded = f"^{text}$"
    out += [f"c2:{padded[i:i + 2]}" for i in range(len(padded) - 1)]
    out += [f"c3:{padded[i:i + 3]}" for i in range(len(padded) - 2)]
    words = [t for t in tokens if t.strip() and t not in _PUNCT]
    out += [f"w:{t}" for t in words]
    # Syllable pairs: same-sounding characters share them (优惠 / 尤惠: s2:you_hui).
    sounds = [syllable(c) for c in text if is_han(c)]
    out += [f"s2:{a}_{b}" for a, b in zip(sounds, sounds[1:], strict=False)]
    size = len(text)
    out.append("len:" + ("0" if size == 0 else "1-2" if size <= 2 else "3-5" if size <= 5 else
                         "6-10" if size <= 10 else "11-25" if size <= 25 else "26+"))
    if "?" in norm or "？" in norm:
        out.append("q:?")
    return out
