"""Hybrid intent classifier: operator keywords (words, pinyin, homophones) + a trained linear model."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jieba

from bot.yamlfile import ConfigError

from . import model as linear
from .config import (
    DIALECT_PATH,
    EXAMPLES_PATH,
    FAQ_PATH,
    KEYWORDS_PATH,
    DialectRules,
    FaqRules,
    KeywordRules,
    load_dialect,
    load_faq,
    load_keywords,
)
from .examples import Example, read_corpus
from .faq import FaqIndex
from .features import features
from .labels import INTENTS, ROUTES, Intent
from .normalize import normalize
from .pinyin import is_han, is_pinyin, spellings, syllable

_CLAUSE_BREAK = re.compile(r"[,.;:!?。、，；：！？\n]")
# Left after removing greetings, any of these makes the message a real question, not a greeting.
_QUESTION = re.compile(r"[?吗呢么]|怎|什么|请问|如何|哪|多久|多少|几|能否|可否|是否|有没有|能不能|可不可以|想问|咨询")
_STRIP = re.compile(r"[\W_]+")
# Sentence-final particles: alone after a greeting they make no question ("好的呢").
_PARTICLES = "呢啊呀哦啦嘛哈滴噢喔"
# The greeting topic that answers an acknowledgement no greeting word names.
ACK_TOPIC = "ack"
_LATIN = re.compile(r"[a-z]+")

# Kinds of things a keyword can point at.
_LABEL, _WHEN_NEGATED, _NEG, _IGNORE, _TOPIC, _FORCE = range(6)
# A pinyin spelling must be this long to count (short syllable strings would fire everywhere).
MIN_PINYIN = 4
# Without a greeting word, the model must be this sure that a message is only a greeting.
GREETING_BY_MODEL = 0.85
# After a negated keyword, a label without keyword evidence needs this much confidence.
NEGATED_THRESHOLD = 0.7
# A label whose keyword the message has wins over other/greeting at this model probability.
KEYWORD_SECOND = 0.3
# Messages this short may borrow the customer's previous message as context.
CONTEXT_CHARS = 8
# Words that decline or put off: a short message with one of them never borrows a request.
_DECLINE = re.compile(r"不用|不要|不买|算了|再看看|再说|先不|考虑|问问|没事|不需要|不了")
# ... when alone they are "other", have no keyword of their own ("这个呢" after "有优惠吗"), or the
# model is less sure than this.
CONTEXT_UNSURE = 0.8


@dataclass(slots=True)
class Parsed:
    """A normalised message cut into tokens."""

    norm: str
    tokens: list[str]


@dataclass(slots=True)
class RuleResult:
    """What the keywords say about a message."""

    found: dict[str, list[str]] = field(default_factory=dict)
    negated_labels: set[str] = field(default_factory=set)
    forced: dict[str, list[str]] = field(default_factory=dict)
    topics: dict[str, list[str]] = field(default_factory=dict)
    greeting_spans: list[tuple[int, int]] = field(default_factory=list)
    pinyin: dict[str, list[str]] = field(default_factory=dict)


class Classifier:
    """Classifies customer messages with the keyword rules, the dialect map and the trained model."""

    def __init__(self, rules: KeywordRules, faq: FaqRules, dialect: DialectRules | None = None,
                 model: linear.LinearModel | None = None) -> None:
        self.rules = rules
        self.faq = faq
        self._priority = rules.priority
        self._negatable = {name: lab.negatable for name, lab in rules.labels.items()}
        self._window = rules.negation_window
        self.threshold = rules.threshold
        self.threshold_model_only = rules.threshold_model_only
        self.context_seconds = rules.context_seconds
        self._topics = {t.name: t for t in faq.topics}
        self._topic_rank = {t.name: i for i, t in enumerate(faq.topics)}
        self._fallback = faq.fallback
        self._phrases = dict(dialect.phrases if dialect else {})
        self._dialect_tokens = dict(dialect.tokens if dialect else {})
        self.model = model
        self.explain = False  # name the model's strongest features in `why` (the CLI turns it on)
        self.background: Sequence[str] = ()  # the corpus' messages: word weights for FAQ similarity

        targets: dict[str, list[tuple[int, str]]] = {}
        substrings: set[str] = set()
        for lab in rules.labels.values():
            for word in lab.words:
                targets.setdefault(word, []).append((_LABEL, lab.name))
            for word in lab.substrings:
                targets.setdefault(word, []).append((_LABEL, lab.name))
                substrings.add(word)
            for word in lab.force:
                targets.setdefault(word, []).append((_FORCE, lab.name))
            for word in lab.when_negated:
                targets.setdefault(word, []).append((_WHEN_NEGATED, lab.name))
        for word in rules.negation_words:
            targets.setdefault(word, []).append((_NEG, ""))
        for word in rules.ignore:
            targets[word] = [(_IGNORE, "")]
            substrings.add(word)
        for topic in faq.topics:
            for word in topic.words:
                targets.setdefault(word, []).append((_TOPIC, topic.name))
        self._targets = {word: tuple(t) for word, t in targets.items()}
        self._substrings = frozenset(substrings)
        self._negation = frozenset(w for w, t in self._targets.items() if (_NEG, "") in t)

        # Multi-character keywords are found by a scan: for each first character, the keyword
        # lengths to try, longest first ("补差价" beats "差价").
        lengths: dict[str, set[int]] = {}
        for word in targets:
            lengths.setdefault(word[0], set()).add(len(word))
        self._lengths = {char: tuple(sorted(ls, reverse=True)) for char, ls in lengths.items()}
        ordered = sorted(self._phrases, key=len, reverse=True)  # longest first: 几多钱 before 几多
        self._phrase_re = re.compile("|".join(map(re.escape, ordered))) if ordered else None

        # Pinyin spellings of Chinese keywords of two or more characters: homophones ("尤惠") and
        # customers typing pinyin ("youhui", "zhuan rengong") hit the keyword they sound like.
        self._spelled: dict[str, str] = {}
        for word, kinds in self._targets.items():
            if len(word) >= 2 and all(is_han(c) for c in word) and any(k in (_LABEL, _FORCE) for k, _ in kinds):
                for sound in spellings(word):  # 便宜: bianyi and pianyi
                    if len(sound) >= MIN_PINYIN:
                        self._spelled.setdefault(sound, word)
        self._sound_lengths = sorted({len(w) for w in self._spelled.values()}, reverse=True)
        self._first_sounds = frozenset(syllable(w[0]) for w in self._spelled.values())

        jieba.setLogLevel(logging.WARNING)  # jieba logs its dictionary loading at DEBUG on its own handler
        jieba.initialize()
        # jieba's dictionary is shared by the process: add only what it lacks, so rebuilding a
        # classifier (a reload) never shifts the frequencies the model was trained with.
        known = jieba.dt.FREQ
        for word in (*targets, *self._phrases.values(), *self._dialect_tokens):
            if len(word) > 1 and not word.isascii() and not known.get(word):
                jieba.add_word(word)

    # --- the decision ------------------------------------------------------------------------

    def classify(self, text: str, previous: str | None = None) -> Intent:
        """Classify one message (with the customer's previous message as context); never raises."""
        if not isinstance(text, str):
            text = ""
        parsed = self.parse(text)
        result = self._decide(text, parsed)
        if previous and self._wants_context(parsed, result):
            joined = self._decide(text, self.parse(f"{previous[-60:]}，{text}"))
            if joined.intent not in ("other", "greeting") and joined.confidence >= self.threshold and \
                    self._could_mean(parsed, joined.intent):
                return Intent(text, joined.intent, joined.topic, joined.matched, joined.negated, joined.route,
                              joined.confidence, (f"context: read together with the previous message "
                                                  f"「{previous[-30:]}」", *joined.why))
        return result

    def _could_mean(self, parsed: Parsed, label: str) -> bool:
        """The message alone leaves `label` open: no "no" in it ("不用了" after "转人工" is not a second
        request for a person), and more than a number."""
        rule = self._rules(parsed)
        if rule.negated_labels or _DECLINE.search(parsed.norm):
            return False
        return any(c.isalpha() for c in parsed.norm)

    def _wants_context(self, parsed: Parsed, result: Intent) -> bool:
        """A short message that alone says little (not a greeting, not a confident label)."""
        size = len(_STRIP.sub("", parsed.norm))
        if not 0 < size <= CONTEXT_CHARS or result.intent == "greeting" or result.topic is not None:
            return False
        own_words = bool(result.matched) and any(w.startswith(("keyword", "sounds like")) for w in result.why)
        return result.intent == "other" or not own_words or result.confidence < CONTEXT_UNSURE

    def _decide(self, text: str, parsed: Parsed) -> Intent:
        rule = self._rules(parsed)
        negated = bool(rule.negated_labels)
        if not parsed.norm:
            return Intent(text, "other", None, (), False, "bot", 1.0, ("empty after normalising",))
        why: list[str] = []
        for name, words in rule.found.items():
            why.append(f"keyword {'、'.join(words)} -> {name}")
        for name, words in rule.pinyin.items():
            why.append(f"sounds like {'、'.join(words)} -> {name}")
        for name in rule.negated_labels:
            why.append(f"negated: {name}")

        forced = next((name for name in self._priority if name in rule.forced), None)
        if forced:
            why.insert(0, f"forced by operator keyword {'、'.join(rule.forced[forced])}")
            return self._finish(text, forced, 1.0, rule, negated, why, parsed)

        if self.model is None:
            intent = next((name for name in self._priority if name in rule.found), "other")
            return self._finish(text, intent, 1.0, rule, negated, why, parsed)

        rows, fixed, probs = self._model_scores(parsed, rule)
        if not fixed and len(rows) <= 2 and not self._knows(parsed):
            why.append("no word the model knows")
            return self._finish(text, "other", 1.0, rule, negated, why, parsed)
        ranked = sorted(zip(self.model.labels, probs, strict=True), key=lambda p: -p[1])
        intent, confidence = ranked[0]
        refused = rule.negated_labels - set(rule.found) - set(rule.pinyin)
        if intent in refused:  # the customer said no to it ("不用转人工", "不要优惠券了")
            intent, confidence = next((lab, p) for lab, p in ranked if lab not in refused)
            why.append(f"{ranked[0][0]} is negated: next best is {intent}")
        needs_words = intent not in ("other", "greeting") and not (rule.found.get(intent) or rule.pinyin.get(intent))
        strongest = self.model.strongest(rows + fixed, intent) if self.explain or needs_words else []
        if strongest:
            why.append(f"model: {intent} {confidence:.2f} ("
                       + ", ".join(f"{name} {weight:+.1f}" for name, weight in strongest[:4]) + ")")
        if intent == "greeting" and "greeting" not in rule.found and confidence < GREETING_BY_MODEL:
            why.append("no greeting word: treated as other")
            intent, confidence = "other", float(1.0 - confidence)
        if intent in ("other", "greeting") and rule.found:
            # A keyword the model nearly agrees with ("嗯嗯，我想投诉一下") wins over small talk.
            probs_by_label = dict(ranked)
            keyword = next((lab for lab in self._priority if lab in rule.found and lab != "greeting"
                            and probs_by_label.get(lab, 0.0) >= KEYWORD_SECOND), None)
            if keyword:
                why.append(f"keyword label {keyword} ({probs_by_label[keyword]:.2f}) over {intent}")
                intent, confidence = keyword, max(probs_by_label[keyword], self.threshold)
        threshold = self.threshold
        if intent not in rule.found:  # no keyword of its own (a sound-alike is only a hint)
            threshold = max(threshold, self.threshold_model_only)
        if rule.negated_labels and intent not in rule.found:
            threshold = max(threshold, NEGATED_THRESHOLD)  # what is left after a "no" must be clear
        if intent not in ("other", "greeting") and confidence < threshold:
            why.append(f"confidence {confidence:.2f} below {threshold:.2f}: treated as other")
            intent, confidence = "other", float(1.0 - confidence)
        matched = tuple(rule.found.get(intent) or rule.pinyin.get(intent) or
                        [_readable(name) for name, _ in strongest if _readable(name)][:3])
        return self._finish(text, intent, confidence, rule, negated, why, parsed, matched)

    def _model_scores(self, parsed: Parsed, rule: RuleResult) -> tuple[list[int], list[int], list[float]]:
        """The model's known text rows, keyword rows and label probabilities."""
        assert self.model is not None
        feats = features(parsed.norm, parsed.tokens)
        rows = self.model.rows(feats)
        fixed = self.model.rows(self._rule_features(rule))
        return rows, fixed, self.model.probabilities(rows, len(feats), fixed)

    def _knows(self, parsed: Parsed) -> bool:
        """True when the model has seen any character or word of the message."""
        assert self.model is not None
        index = self.model.index
        return any(f"c1:{c}" in index or f"w:{c}" in index for c in parsed.norm if not c.isspace()) or \
            any(f"w:{t}" in index for t in parsed.tokens)

    def probabilities(self, text: str) -> dict[str, float]:
        """The model's probability of each label for `text` (before threshold and greeting checks)."""
        if self.model is None:
            return {}
        parsed = self.parse(text)
        probs = self._model_scores(parsed, self._rules(parsed))[2]
        return dict(zip(self.model.labels, probs, strict=True))

    def _finish(self, text: str, intent: str, confidence: float, rule: RuleResult, negated: bool,
                why: list[str], parsed: Parsed, matched: tuple[str, ...] | None = None) -> Intent:
        # A greeting beside an FAQ topic word ("退款到账了，谢谢") is thanks when the model is sure of it.
        topics = rule.topics if confidence < GREETING_BY_MODEL else {}
        if intent == "greeting" and not self._only_greeting(parsed.norm, rule.greeting_spans, topics):
            why.append("more than a greeting: treated as other")
            intent = "other"
        topic = self._pick_topic(intent, rule.topics, parsed) if intent in ("other", "greeting") else None
        if matched is None:
            matched = tuple(rule.forced.get(intent) or rule.found.get(intent) or ())
        if intent == "other":
            matched = tuple(rule.topics[topic]) if topic and topic in rule.topics else ()
        if topic:
            why.append(f"FAQ topic: {topic}")
        return Intent(text, intent, topic, matched, negated, ROUTES[intent], round(confidence, 3), tuple(why))

    # --- keywords ----------------------------------------------------------------------------

    def parse(self, text: str) -> Parsed:
        """Normalise (dialect words included) and cut into tokens."""
        norm = self._apply_phrases(normalize(text))
        tokens = [self._dialect_tokens.get(t, t) for t in jieba.lcut(norm, HMM=False)] if norm else []
        if self._dialect_tokens and tokens:
            norm = "".join(tokens)
        return Parsed(norm, tokens)

    def _apply_phrases(self, norm: str) -> str:
        """Replace dialect phrases, leftmost-longest."""
        if self._phrase_re is None:
            return norm
        return self._phrase_re.sub(lambda m: self._phrases[m.group(0)], norm)

    def _rules(self, parsed: Parsed) -> RuleResult:
        """Keyword hits on token boundaries, negation, pinyin sound-alikes."""
        norm, result = parsed.norm, RuleResult()
        if not norm:
            return result
        starts, ends, pos = {0}, set(), 0
        for token in parsed.tokens:
            pos += len(token)
            starts.add(pos)
            ends.add(pos)
        hits = self._scan(norm, starts, ends)
        hits += self._sound_hits(norm, parsed.tokens, hits, starts, ends)
        hits.sort()
        neg_ends = [end for _, end, word, _ in hits if word in self._negation]
        for start, end, word, how in hits:
            for kind, name in self._targets[word]:
                if kind == _TOPIC:
                    if how == "word":
                        result.topics.setdefault(name, []).append(word)
                    continue
                if kind not in (_LABEL, _WHEN_NEGATED, _FORCE):
                    continue
                is_neg = bool(neg_ends) and self._is_negated(norm, start, neg_ends)
                if kind in (_LABEL, _FORCE) and is_neg and self._negatable[name]:
                    result.negated_labels.add(name)
                    continue
                if kind == _WHEN_NEGATED and not is_neg:
                    continue
                if is_neg:
                    result.negated_labels.add(name)
                if how != "word":
                    result.pinyin.setdefault(name, []).append(word)
                elif kind == _FORCE:
                    result.forced.setdefault(name, []).append(word)
                else:
                    result.found.setdefault(name, []).append(word)
                if name == "greeting":
                    result.greeting_spans.append((start, end))
        return result

    def _scan(self, norm: str, starts: set[int], ends: set[int]) -> list[tuple[int, int, str, str]]:
        """Keywords in the text, leftmost-longest, on token boundaries (substring patterns anywhere)."""
        hits = []
        targets, lengths, size, i = self._targets, self._lengths, len(norm), 0
        while i < size:
            for length in lengths.get(norm[i], ()):
                word = norm[i:i + length]
                if len(word) < length or word not in targets:
                    continue
                if word in self._substrings or (i in starts and i + length in ends):
                    hits.append((i, i + length, word, "word"))
                    i += length
                    break
            else:
                i += 1
        return hits

    def _sound_hits(self, norm: str, tokens: list[str], hits: list[tuple[int, int, str, str]],
                    starts: set[int], ends: set[int]) -> list[tuple[int, int, str, str]]:
        """Keywords written in pinyin ("zhuan rengong") or with same-sounding characters ("尤惠")."""
        if not self._spelled:
            return []
        covered = bytearray(len(norm) + 1)
        for s, e, _, _ in hits:
            covered[s:e] = b"\x01" * (e - s)
        out: list[tuple[int, int, str, str]] = []
        # Chinese characters that sound like a keyword, on token boundaries.
        sounds = [syllable(c) for c in norm]
        first, lengths, spelled = self._first_sounds, self._sound_lengths, self._spelled
        for start in sorted(starts):
            if start >= len(norm) or sounds[start] not in first or covered[start]:
                continue
            for length in lengths:
                end = start + length
                if end not in ends or any(covered[start:end]) or not all(sounds[start:end]):
                    continue
                word = spelled.get("".join(sounds[start:end]))
                piece = norm[start:end]
                # A typing slip keeps at least one character (尤惠 for 优惠, 顾文 for 顾问); a real word
                # of its own (克服, 主观, 受到) is not a slip.
                if word and word != piece and not set(word).isdisjoint(piece) and \
                        not (jieba.dt.FREQ.get(piece) and piece not in self._targets):
                    out.append((start, end, word, "sound"))
                    covered[start:end] = b"\x01" * length
                    break
        # Latin tokens (one or a few in a row, only spaces between) that spell a keyword; in a
        # message without Chinese, only when every Latin word reads as pinyin ("pole" is English).
        if not _LATIN.search(norm):
            return out
        spans, pos, runs = [], 0, []
        for token in tokens:
            if _LATIN.fullmatch(token):
                spans.append((pos, pos + len(token), token))
            elif not token.isspace() and spans:
                runs.append(spans)
                spans = []
            pos += len(token)
        runs.append(spans)
        latin = [t for run in runs for _, _, t in run]
        if not any(is_han(c) for c in norm) and not all(is_pinyin(t) for t in latin):
            return out
        for spans in runs:
            out += self._latin_hits(spans, covered)
        return out

    def _latin_hits(self, spans: list[tuple[int, int, str]], covered: bytearray) -> list[tuple[int, int, str, str]]:
        """Keywords spelled by consecutive Latin tokens."""
        out: list[tuple[int, int, str, str]] = []
        spelled = self._spelled
        for i in range(len(spans)):
            joined = ""
            for j in range(i, min(i + 4, len(spans))):
                joined += spans[j][2]
                word = spelled.get(joined)
                if word and not any(covered[spans[i][0]:spans[j][1]]):
                    out.append((spans[i][0], spans[j][1], word, "pinyin"))
                    covered[spans[i][0]:spans[j][1]] = b"\x01" * (spans[j][1] - spans[i][0])
                    break
        return out

    def _rule_features(self, rule: RuleResult) -> list[str]:
        feats = [f"R:{name}" for name in rule.found]
        feats += [f"RN:{name}" for name in rule.negated_labels]
        feats += [f"RP:{name}" for name in rule.pinyin]
        if any(not self._topics[name].greeting for name in rule.topics):
            feats.append("RT")
        return feats

    def _is_negated(self, norm: str, start: int, neg_ends: list[int]) -> bool:
        """True when a negation word ends shortly before `start` in the same clause."""
        for end in neg_ends:
            if end <= start and start - end <= self._window and not _CLAUSE_BREAK.search(norm, end, start):
                return True
        return False

    def _only_greeting(self, norm: str, spans: list[tuple[int, int]], topics: dict[str, list[str]]) -> bool:
        """True when nothing but greetings is left: no FAQ topic and no question in the rest."""
        if any(not self._topics[name].greeting for name in topics):
            return False
        rest, last = [], 0
        for start, end in spans:
            rest.append(norm[last:start])
            last = max(last, end)
        rest.append(norm[last:])
        rest_text = _STRIP.sub("", "".join(rest))
        if not rest_text.strip(_PARTICLES):  # "好的呢", "嗯嗯啦": particles only
            return True
        return len(rest_text) <= 20 and not _QUESTION.search(rest_text)

    # --- FAQ ---------------------------------------------------------------------------------

    def _pick_topic(self, intent: str, topics: dict[str, list[str]], parsed: Parsed) -> str | None:
        """FAQ topic: keywords first (first in faq.yaml), then the most similar example question."""
        if intent == "other":
            names = [n for n in topics if not self._topics[n].greeting]
            if names:
                return min(names, key=self._topic_rank.__getitem__)
            return self.faq_index.best(parsed.norm, parsed.tokens)
        names = [n for n in topics if self._topics[n].greeting]
        if names:
            return names[-1]
        # A greeting the model knows but no greeting word names ("了解", "okk"): the short acknowledgement.
        return ACK_TOPIC if ACK_TOPIC in self._topics else None

    @property
    def faq_index(self) -> FaqIndex:
        """The similarity index over the FAQ topics' example questions (built on first use)."""
        index = getattr(self, "_faq_index", None)
        if index is None:
            topics = [t for t in self.faq.topics if not t.greeting]
            index = FaqIndex([(t.name, [self.parse(q) for q in (*t.examples, t.title)]) for t in topics],
                             [self.parse(text) for text in self.background])
            self._faq_index = index
        return index

    def retrained(self, examples: Sequence[Example]) -> Classifier:
        """The same rules with a model trained on `examples` (for cross-validation)."""
        other = copy.copy(self)
        other.model = train_model(self, examples)
        return other

    def faq_answer(self, topic: str | None) -> str:
        """The answer of an FAQ topic, or the fallback (which offers a human)."""
        found = self._topics.get(topic) if topic else None
        return found.answer if found else self._fallback


def _readable(feature: str) -> str:
    """A model feature as staff can read it ('w:多少' -> '多少'); '' for technical ones."""
    kind, _, value = feature.partition(":")
    return value.strip("^$") if kind in ("w", "c3") and len(value.strip("^$")) > 1 else ""


@dataclass(frozen=True)
class Sources:
    """The files a classifier is built from."""

    keywords: Path = KEYWORDS_PATH
    faq: Path = FAQ_PATH
    examples: Path = EXAMPLES_PATH
    dialect: Path | None = DIALECT_PATH

    def key(self, corpus_digest: str) -> str:
        """The model cache key: every byte the trained model depends on."""
        parts = [corpus_digest, jieba.__version__]
        for path in (self.keywords, self.faq, self.dialect):
            parts.append(path.read_text(encoding="utf-8") if path and path.exists() else "")
        return linear.cache_key(*parts)


def train_model(clf: Classifier, examples: Sequence[Example]) -> linear.LinearModel:
    """Fit the linear model on examples, with the classifier's keyword rules as features."""
    rows, labels = [], []
    for ex in examples:
        parsed = clf.parse(ex.text)
        rows.append((features(parsed.norm, parsed.tokens), clf._rule_features(clf._rules(parsed))))
        labels.append(ex.label)
    return linear.train(rows, labels, INTENTS)


def load_classifier(keywords_path: Path | str | None = None, faq_path: Path | str | None = None,
                    examples_path: Path | str | None = None, dialect_path: Path | str | None = None,
                    use_cache: bool = True) -> Classifier:
    """A Classifier from the YAML files and the example corpus (the shipped ones by default)."""
    src = Sources(Path(keywords_path or KEYWORDS_PATH), Path(faq_path or FAQ_PATH),
                  Path(examples_path or EXAMPLES_PATH), Path(dialect_path) if dialect_path else DIALECT_PATH)
    dialect = load_dialect(src.dialect) if src.dialect and src.dialect.exists() else None
    clf = Classifier(load_keywords(src.keywords), load_faq(src.faq), dialect)
    examples, corpus_digest = read_corpus(src.examples)
    key = src.key(corpus_digest)
    trained = linear.load_cached(key) if use_cache else None
    if trained is None:
        try:
            trained = train_model(clf, examples)
        except ValueError as exc:  # scikit-learn refusing the data: say which files
            raise ConfigError(f"{src.examples}:1: cannot train the intent model: {exc}") from None
        if use_cache:
            linear.save_cached(key, trained)
    clf.model = trained
    clf.background = [ex.text for ex in examples]
    _ = clf.faq_index  # built now, not on the first customer message
    return clf
