"""Score the classifier on a labelled file: text<TAB>label[<TAB>kind]."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bot.yamlfile import ConfigError

from .classify import INTENTS, Classifier


@dataclass(frozen=True)
class Example:
    """One labelled message."""

    text: str
    label: str
    kind: str
    line: int


@dataclass
class Report:
    """Per-label precision/recall/F1, macro-F1, accuracy and the confusion table (gold -> predicted)."""

    total: int = 0
    correct: int = 0
    confusion: dict[str, dict[str, int]] = field(default_factory=lambda: {g: dict.fromkeys(INTENTS, 0) for g in INTENTS})
    errors: list[tuple[Example, str]] = field(default_factory=list)

    def add(self, example: Example, predicted: str) -> None:
        """Count one prediction."""
        self.total += 1
        self.confusion[example.label][predicted] += 1
        if predicted == example.label:
            self.correct += 1
        else:
            self.errors.append((example, predicted))

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
    def macro_f1(self) -> float:
        """Mean F1 over the labels that occur (as gold or predicted); all 7 when the file covers them."""
        used = [lab for lab in INTENTS if self.confusion[lab][lab] or any(row[lab] for row in self.confusion.values())
                or any(self.confusion[lab].values())]
        return sum(self.scores(lab)["f1"] for lab in used) / len(used) if used else 0.0

    def as_dict(self) -> dict:
        """JSON-ready summary."""
        return {
            "labels": {lab: self.scores(lab) for lab in INTENTS},
            "macro_f1": self.macro_f1,
            "accuracy": self.accuracy,
            "total": self.total,
            "confusion": self.confusion,
            "errors": [{"text": ex.text, "label": ex.label, "predicted": p, "line": ex.line} for ex, p in self.errors],
        }


def read_examples(path: Path | str) -> list[Example]:
    """Read a labelled TSV; a header line (first field 'text') and blank lines are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}:1: cannot read: {exc.strerror or exc}") from None
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if fields[0] == "text" and number == 1:
            continue
        if len(fields) < 2 or fields[1].strip() not in INTENTS:
            raise ConfigError(f"{path}:{number}: expected text<TAB>label with label one of: {', '.join(INTENTS)}")
        kind = fields[2].strip() if len(fields) > 2 else ""
        out.append(Example(fields[0], fields[1].strip(), kind, number))
    return out


def evaluate(classifier: Classifier, examples: list[Example]) -> Report:
    """Classify every example and tally the results."""
    report = Report()
    for example in examples:
        report.add(example, classifier.classify(example.text).intent)
    return report
