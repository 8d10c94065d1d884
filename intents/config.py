"""Load and validate keywords.yaml and faq.yaml into plain rule objects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot import yamlfile
from bot.yamlfile import Doc, KeyPath

from .normalize import normalize

HERE = Path(__file__).parent
KEYWORDS_PATH = HERE / "keywords.yaml"
FAQ_PATH = HERE / "faq.yaml"

LABELS = ("complaint", "human", "price", "discount", "unsubscribe", "greeting")
WORD_LISTS = ("keywords", "synonyms", "english", "typos")


@dataclass(frozen=True)
class LabelRules:
    """Keywords of one label; `when_negated` words count only after a negation word."""

    name: str
    words: tuple[str, ...]
    when_negated: tuple[str, ...]
    negatable: bool


@dataclass(frozen=True)
class KeywordRules:
    """Everything keywords.yaml says."""

    priority: tuple[str, ...]
    labels: dict[str, LabelRules]
    negation_words: tuple[str, ...]
    negation_window: int
    ignore: tuple[str, ...]


@dataclass(frozen=True)
class Topic:
    """An FAQ topic (or greeting topic) with its keywords and answer."""

    name: str
    words: tuple[str, ...]
    answer: str
    greeting: bool


@dataclass(frozen=True)
class FaqRules:
    """Everything faq.yaml says; topics keep file order (earlier wins)."""

    topics: tuple[Topic, ...]
    fallback: str


def _mapping(doc: Doc, keypath: KeyPath, value: Any, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise doc.error(keypath, "must be a mapping")
    for key in value:
        if allowed is not None and key not in allowed:
            raise doc.error((*keypath, str(key)), f"unknown key; expected one of: {', '.join(allowed)}")
    return value


def _words(doc: Doc, keypath: KeyPath, value: Any) -> tuple[str, ...]:
    """A list of non-empty strings, normalised like customer text."""
    if not isinstance(value, list):
        raise doc.error(keypath, "must be a list of keywords")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise doc.error((*keypath, i), "keyword must be text (quote words YAML reads as true/false or numbers: \"off\", \"no\")")
        word = normalize(str(item))
        if not word:
            raise doc.error((*keypath, i), "keyword is empty")
        out.append(word)
    return tuple(out)


def _text(doc: Doc, keypath: KeyPath, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise doc.error(keypath, "must be a non-empty text")
    return value.strip()


def load_keywords(path: Path | str = KEYWORDS_PATH) -> KeywordRules:
    """Parse keywords.yaml; any mistake is a ConfigError naming file, line and key."""
    doc = yamlfile.load(path)
    top = _mapping(doc, (), doc.data, ("priority", "negation", "ignore", "labels"))
    for key in ("priority", "negation", "labels"):
        if key not in top:
            raise doc.error((), f"missing key: {key}")

    priority = top["priority"]
    if not isinstance(priority, list):
        raise doc.error(("priority",), "must be a list of labels")
    for i, name in enumerate(priority):
        if name not in LABELS:
            raise doc.error(("priority", i), f"unknown label {name!r}; labels are: {', '.join(LABELS)}")
    if sorted(priority) != sorted(LABELS):
        raise doc.error(("priority",), f"must list each label exactly once: {', '.join(LABELS)}")

    negation = _mapping(doc, ("negation",), top["negation"], ("words", "window"))
    window = negation.get("window", 6)
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise doc.error(("negation", "window"), "must be a whole number of characters >= 0")
    negation_words = _words(doc, ("negation", "words"), negation.get("words"))

    labels: dict[str, LabelRules] = {}
    for name, spec in _mapping(doc, ("labels",), top["labels"]).items():
        keypath = ("labels", str(name))
        if name not in LABELS:
            raise doc.error(keypath, f"unknown label {name!r}; labels are: {', '.join(LABELS)}")
        spec = _mapping(doc, keypath, spec, (*WORD_LISTS, "when_negated", "negatable"))
        words = tuple(w for key in WORD_LISTS if key in spec for w in _words(doc, (*keypath, key), spec[key]))
        when_negated = _words(doc, (*keypath, "when_negated"), spec.get("when_negated", []))
        negatable = spec.get("negatable", True)
        if not isinstance(negatable, bool):
            raise doc.error((*keypath, "negatable"), "must be true or false")
        if not words and not when_negated:
            raise doc.error(keypath, "has no keywords")
        labels[name] = LabelRules(name, words, when_negated, negatable)
    for name in LABELS:
        if name not in labels:
            raise doc.error(("labels",), f"missing label: {name}")

    ignore = _words(doc, ("ignore",), top.get("ignore", []))
    return KeywordRules(tuple(priority), labels, negation_words, window, ignore)


def load_faq(path: Path | str = FAQ_PATH) -> FaqRules:
    """Parse faq.yaml; any mistake is a ConfigError naming file, line and key."""
    doc = yamlfile.load(path)
    top = _mapping(doc, (), doc.data, ("fallback", "topics", "greetings"))
    if "fallback" not in top:
        raise doc.error((), "missing key: fallback")
    fallback = _text(doc, ("fallback",), top["fallback"])
    topics: list[Topic] = []
    seen: set[str] = set()
    for section in ("topics", "greetings"):
        for name, spec in _mapping(doc, (section,), top.get(section, {})).items():
            keypath = (section, str(name))
            if name in seen:
                raise doc.error(keypath, "topic name used twice")
            seen.add(name)
            spec = _mapping(doc, keypath, spec, ("keywords", "answer"))
            for key in ("keywords", "answer"):
                if key not in spec:
                    raise doc.error(keypath, f"missing key: {key}")
            words = _words(doc, (*keypath, "keywords"), spec["keywords"])
            answer = _text(doc, (*keypath, "answer"), spec["answer"])
            topics.append(Topic(str(name), words, answer, section == "greetings"))
    return FaqRules(tuple(topics), fallback)
