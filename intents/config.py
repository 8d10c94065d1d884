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
DIALECT_PATH = HERE / "dialect.yaml"
EXAMPLES_PATH = HERE / "examples"

LABELS = ("complaint", "human", "price", "discount", "unsubscribe", "greeting")
WORD_LISTS = ("keywords", "synonyms", "english", "typos")


@dataclass(frozen=True)
class LabelRules:
    """Keywords of one label; `when_negated` words count only after a negation word."""

    name: str
    words: tuple[str, ...]
    when_negated: tuple[str, ...]
    negatable: bool
    force: tuple[str, ...] = ()
    substrings: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeywordRules:
    """Everything keywords.yaml says."""

    priority: tuple[str, ...]
    labels: dict[str, LabelRules]
    negation_words: tuple[str, ...]
    negation_window: int
    ignore: tuple[str, ...]
    threshold: float = 0.45
    context_seconds: int = 600
    threshold_model_only: float = 0.6


@dataclass(frozen=True)
class Topic:
    """An FAQ topic (or greeting topic) with its keywords and answer."""

    name: str
    words: tuple[str, ...]
    answer: str
    greeting: bool
    examples: tuple[str, ...] = ()
    title: str = ""


@dataclass(frozen=True)
class FaqRules:
    """Everything faq.yaml says; topics keep file order (earlier wins)."""

    topics: tuple[Topic, ...]
    fallback: str
    repeat: RepeatRule | None = None


@dataclass(frozen=True)
class RepeatRule:
    """After `after` fallbacks in a row, the next one offers a person (`offer`) or hands over (`handoff`)."""

    after: int
    mode: str
    text: str


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
    top = _mapping(doc, (), doc.data, ("priority", "negation", "ignore", "labels", "model"))
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
        spec = _mapping(doc, keypath, spec, (*WORD_LISTS, "when_negated", "negatable", "force", "substrings"))
        words = tuple(w for key in WORD_LISTS if key in spec for w in _words(doc, (*keypath, key), spec[key]))
        when_negated = _words(doc, (*keypath, "when_negated"), spec.get("when_negated", []))
        force = _words(doc, (*keypath, "force"), spec.get("force", []))
        substrings = _words(doc, (*keypath, "substrings"), spec.get("substrings", []))
        negatable = spec.get("negatable", True)
        if not isinstance(negatable, bool):
            raise doc.error((*keypath, "negatable"), "must be true or false")
        if not words and not when_negated and not force and not substrings:
            raise doc.error(keypath, "has no keywords")
        labels[name] = LabelRules(name, words, when_negated, negatable, force, substrings)
    for name in LABELS:
        if name not in labels:
            raise doc.error(("labels",), f"missing label: {name}")

    ignore = _words(doc, ("ignore",), top.get("ignore", []))
    model = _mapping(doc, ("model",), top.get("model", {}), ("threshold", "threshold_model_only",
                                                                "context_seconds"))
    threshold = yamlfile.number(doc, ("model", "threshold"), model.get("threshold", 0.45), minimum=0, maximum=1)
    model_only = yamlfile.number(doc, ("model", "threshold_model_only"), model.get("threshold_model_only", 0.6),
                                 minimum=0, maximum=1)
    context = int(yamlfile.number(doc, ("model", "context_seconds"), model.get("context_seconds", 600),
                                  minimum=0, maximum=86400, whole=True))
    return KeywordRules(tuple(priority), labels, negation_words, window, ignore, threshold, context, model_only)


def load_faq(path: Path | str = FAQ_PATH) -> FaqRules:
    """Parse faq.yaml; any mistake is a ConfigError naming file, line and key."""
    doc = yamlfile.load(path)
    top = _mapping(doc, (), doc.data, ("fallback", "topics", "greetings", "after_fallbacks"))
    if "fallback" not in top:
        raise doc.error((), "missing key: fallback")
    fallback = _text(doc, ("fallback",), top["fallback"])
    repeat = None
    if "after_fallbacks" in top:
        where: KeyPath = ("after_fallbacks",)
        rule = _mapping(doc, where, top["after_fallbacks"], ("count", "then", "text"))
        count = int(yamlfile.number(doc, (*where, "count"), rule.get("count", 2), minimum=1, maximum=100,
                                    whole=True))
        mode = yamlfile.choice(doc, (*where, "then"), rule.get("then", "offer"),
                               {"offer": "suggest a person", "handoff": "hand the chat over"})
        repeat = RepeatRule(count, mode, _text(doc, (*where, "text"), rule.get("text")))
    topics: list[Topic] = []
    seen: set[str] = set()
    for section in ("topics", "greetings"):
        for name, spec in _mapping(doc, (section,), top.get(section, {})).items():
            keypath = (section, str(name))
            if name in seen:
                raise doc.error(keypath, "topic name used twice")
            seen.add(name)
            spec = _mapping(doc, keypath, spec, ("keywords", "answer", "examples", "title"))
            for key in ("keywords", "answer"):
                if key not in spec:
                    raise doc.error(keypath, f"missing key: {key}")
            words = _words(doc, (*keypath, "keywords"), spec["keywords"])
            answer = _text(doc, (*keypath, "answer"), spec["answer"])
            examples = _words(doc, (*keypath, "examples"), spec.get("examples", []))
            title = _text(doc, (*keypath, "title"), spec["title"]) if "title" in spec else str(name)
            topics.append(Topic(str(name), words, answer, section == "greetings", examples, title))
    return FaqRules(tuple(topics), fallback, repeat)


@dataclass(frozen=True)
class DialectRules:
    """Cantonese / Taiwanese usage -> Mandarin: phrases replaced anywhere, tokens only as whole words."""

    phrases: dict[str, str]
    tokens: dict[str, str]


def load_dialect(path: Path | str = DIALECT_PATH) -> DialectRules:
    """Parse dialect.yaml; any mistake is a ConfigError naming file, line and key."""
    doc = yamlfile.load(path)
    top = _mapping(doc, (), doc.data if doc.data is not None else {}, ("phrases", "tokens"))
    out: dict[str, dict[str, str]] = {}
    for section in ("phrases", "tokens"):
        table: dict[str, str] = {}
        for key, value in _mapping(doc, (section,), top.get(section) or {}).items():
            keypath = (section, str(key))
            if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
                raise doc.error(keypath, "must map a word to a non-empty Mandarin word")
            word = normalize(str(key))
            if not word:
                raise doc.error(keypath, "word is empty")
            table[word] = normalize(str(value))
        out[section] = table
    return DialectRules(out["phrases"], out["tokens"])
