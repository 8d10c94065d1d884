"""Score the classifier on a labelled file: text<TAB>label[<TAB>kind]."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .classify import INTENTS, ROUTES, Classifier
from .examples import Example, read_examples

__all__ = ["Example", "Report", "evaluate", "read_examples"]  # callers import these from here


@dataclass
class Report:
    """Per-label precision/recall/F1, macro-F1, accuracy and the confusion table (gold -> predicted)."""

    total: int = 0
    correct: int = 0
    route_correct: int = 0
    confusion: dict[str, dict[str, int]] = field(default_factory=lambda: {g: dict.fromkeys(INTENTS, 0) for g in INTENTS})
    errors: list[tuple[Example, str]] = field(default_factory=list)
    error_confidence: list[float] = field(default_factory=list)

    def add(self, example: Example, predicted: str, confidence: float = 1.0) -> None:
        """Count one prediction (and how sure the classifier was of it)."""
        self.total += 1
        self.confusion[example.label][predicted] += 1
        if ROUTES[predicted] == ROUTES[example.label]:
            self.route_correct += 1
        if predicted == example.label:
            self.correct += 1
        else:
            self.errors.append((example, predicted))
            self.error_confidence.append(confidence)

    def scores(self, label: str) -> dict[str, float | int]:
        """precision, recall, f1 and support of one label."""
        tp = self.confusion[label][label]
        predicted = sum(row[label] for row in self.confusion.values())
        support = sum(self.confusion[label].values())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "support": support}

    @property
    def accuracy(self) -> float:
        """Share of messages labelled right."""
        return self.correct / self.total if self.total else 0.0

    @property
    def route_accuracy(self) -> float:
        """Share of messages sent down the right route (handoff, coupon, optout, bot)."""
        return self.route_correct / self.total if self.total else 0.0

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the labels that occur (as gold or predicted); all 7 when the file covers them."""
        used = [lab for lab in INTENTS if self.confusion[lab][lab] or any(row[lab] for row in self.confusion.values())
                or any(self.confusion[lab].values())]
        return sum(self.scores(lab)["f1"] for lab in used) / len(used) if used else 0.0

    def worst(self, count: int = 20) -> list[tuple[Example, str, float]]:
        """The mistakes made with the most confidence first: the ones to fix."""
        ranked = sorted(zip(self.errors, self.error_confidence, strict=True), key=lambda p: -p[1])
        return [(ex, pred, conf) for (ex, pred), conf in ranked[:count]]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        return {
            "labels": {lab: self.scores(lab) for lab in INTENTS},
            "macro_f1": self.macro_f1,
            "accuracy": self.accuracy,
            "route_accuracy": self.route_accuracy,
            "total": self.total,
            "confusion": self.confusion,
            "errors": [{"text": ex.text, "label": ex.label, "predicted": p, "line": ex.line, "source": ex.source,
                        "confidence": c} for (ex, p), c in zip(self.errors, self.error_confidence, strict=True)],
        }


def evaluate(classifier: Classifier, examples: list[Example]) -> Report:
    """Classify every example and tally the results."""
    report = Report()
    for example in examples:
        result = classifier.classify(example.text)
        report.add(example, result.intent, result.confidence)
    return report


def cross_validate(build: Callable[[Sequence[Example]], Classifier], examples: Sequence[Example],
                   folds: int = 5, by_source: bool = False, seed: int = 13) -> Report:
    """Train on all folds but one, score on that one, for each fold; one report over all of them.

    With `by_source` the folds are the example files (one brand per file): the model is scored on a
    brand it never saw, the closer figure to customers nobody has seen.
    """
    if by_source:
        names = sorted({ex.source for ex in examples})
        groups = [[ex for ex in examples if ex.source == name] for name in names]
    else:
        order = list(examples)
        random.Random(seed).shuffle(order)
        groups = [order[i::folds] for i in range(folds)]
    report = Report()
    for i, held in enumerate(groups):
        clf = build([ex for j, g in enumerate(groups) if j != i for ex in g])
        for example in held:
            result = clf.classify(example.text)
            report.add(example, result.intent, result.confidence)
    return report
