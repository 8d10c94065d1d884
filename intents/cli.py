"""Helpers behind `wecom-bot intents classify|eval|explain`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TextIO

from .classify import Classifier, Intent, load_classifier
from .config import EXAMPLES_PATH
from .evaluate import Report, cross_validate, evaluate, read_examples
from .examples import load_corpus
from .labels import INTENTS, LABELS_ZH


def from_content(content: Mapping[str, Path]) -> Classifier:
    """The classifier of config.yaml's `content` files (shipped defaults for those not named)."""
    return load_classifier(content.get("keywords"), content.get("faq"), content.get("examples"),
                           content.get("dialect"))


def as_record(result: Intent) -> dict[str, object]:
    """The JSON object of one decision (the `intents classify` contract, plus confidence and why)."""
    return {
        "text": result.text,
        "intent": result.intent,
        "topic": result.topic,
        "matched": list(result.matched),
        "negated": result.negated,
        "route": result.route,
        "confidence": result.confidence,
        "why": list(result.why),
    }


def classify_lines(classifier: Classifier, lines: Iterable[str], out: TextIO) -> None:
    """Print one JSON object per input line."""
    classifier.explain = True
    for line in lines:
        out.write(json.dumps(as_record(classifier.classify(line.rstrip("\r\n"))), ensure_ascii=False) + "\n")


def eval_file(classifier: Classifier, path: Path | str, as_json: bool, out: TextIO) -> int:
    """Score the classifier on a labelled file and print a report (or one JSON object); returns 0."""
    report = evaluate(classifier, read_examples(path))
    _print(report, str(path), as_json, out)
    return 0


def eval_cv(classifier: Classifier, examples: Path | str | None, folds: int, by_brand: bool, as_json: bool,
            out: TextIO) -> int:
    """Cross-validated figures on the example corpus (random folds, or one brand file per fold)."""
    corpus = load_corpus(examples or EXAMPLES_PATH)
    report = cross_validate(classifier.retrained, corpus, folds, by_source=by_brand)
    how = "one brand file held out at a time" if by_brand else f"{folds}-fold cross-validation"
    _print(report, f"{examples or EXAMPLES_PATH} ({how})", as_json, out)
    return 0


def _print(report: Report, title: str, as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(report.as_dict(), ensure_ascii=False) + "\n")
    else:
        out.write(render(report, title))


def render(report: Report, title: str) -> str:
    """Readable report: per-label table, macro-F1, accuracy, confusion table, worst misses."""
    lines = [f"{title}: {report.total} messages", "",
             f"{'label':<12}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}"]
    for lab in INTENTS:
        s = report.scores(lab)
        lines.append(f"{lab:<12}{s['precision']:>10.3f}{s['recall']:>8.3f}{s['f1']:>8.3f}{s['support']:>9}")
    lines += ["", f"macro-F1        {report.macro_f1:.3f}", f"accuracy        {report.accuracy:.3f}",
              f"route accuracy  {report.route_accuracy:.3f}", ""]
    short = {lab: lab[:5] for lab in INTENTS}
    lines.append("confusion (rows: expected, columns: predicted)")
    lines.append(f"{'':<12}" + "".join(f"{short[lab]:>7}" for lab in INTENTS))
    for gold in INTENTS:
        lines.append(f"{gold:<12}" + "".join(f"{report.confusion[gold][p]:>7}" for p in INTENTS))
    if report.errors:
        lines += ["", f"mistakes ({len(report.errors)}), most confident first:"]
        for ex, pred, conf in report.worst(len(report.errors)):
            where = f"{ex.source}:{ex.line}" if ex.source else f"line {ex.line}"
            lines.append(f"  {where}: expected {ex.label}, got {pred} ({conf:.2f}): {ex.text}")
    return "\n".join(lines) + "\n"


def explain(classifier: Classifier, text: str, previous: str | None = None) -> str:
    """A readable account of one decision."""
    classifier.explain = True
    result = classifier.classify(text, previous=previous)
    parsed = classifier.parse(text)
    lines = [f"message:    {text}",
             f"normalised: {parsed.norm}",
             f"tokens:     {' / '.join(t for t in parsed.tokens if t.strip())}",
             f"intent:     {result.intent} ({LABELS_ZH[result.intent]}), confidence {result.confidence:.2f}",
             f"route:      {result.route}"]
    if result.topic:
        lines.append(f"FAQ topic:  {result.topic}")
    if result.matched:
        lines.append(f"matched:    {'、'.join(result.matched)}")
    ranked = sorted(classifier.probabilities(text).items(), key=lambda p: -p[1])
    if ranked:
        lines.append("model:      " + "  ".join(f"{lab} {p:.2f}" for lab, p in ranked[:4]))
    lines.append("why:")
    lines += [f"  - {reason}" for reason in result.why] or ["  - no keyword, no model evidence"]
    return "\n".join(lines) + "\n"

