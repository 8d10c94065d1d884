"""Helpers behind `wecom-bot intents classify|eval`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from .classify import INTENTS, Classifier
from .evaluate import Report, evaluate, read_examples


def classify_lines(classifier: Classifier, lines: Iterable[str], out: TextIO) -> None:
    """Print one JSON object per input line: text, intent, topic, matched, negated, route."""
    for line in lines:
        result = classifier.classify(line.rstrip("\r\n"))
        record = {
            "text": result.text,
            "intent": result.intent,
            "topic": result.topic,
            "matched": list(result.matched),
            "negated": result.negated,
            "route": result.route,
        }
        out.write(json.dumps(record, ensure_ascii=False) + "\n")


def eval_file(classifier: Classifier, path: Path | str, as_json: bool, out: TextIO) -> int:
    """Score the classifier on a labelled file and print a report (or one JSON object); returns 0."""
    report = evaluate(classifier, read_examples(path))
    if as_json:
        out.write(json.dumps(report.as_dict(), ensure_ascii=False) + "\n")
    else:
        out.write(render(report, str(path)))
    return 0


def render(report: Report, title: str) -> str:
    """Readable report: per-label table, macro-F1, accuracy, confusion table, mistakes."""
    lines = [f"{title}: {report.total} messages", "", f"{'label':<12}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}"]
    for lab in INTENTS:
        s = report.scores(lab)
        lines.append(f"{lab:<12}{s['precision']:>10.3f}{s['recall']:>8.3f}{s['f1']:>8.3f}{s['support']:>9}")
    lines += ["", f"macro-F1  {report.macro_f1:.3f}", f"accuracy  {report.accuracy:.3f}", ""]
    short = {lab: lab[:5] for lab in INTENTS}
    lines.append("confusion (rows: expected, columns: predicted)")
    lines.append(f"{'':<12}" + "".join(f"{short[lab]:>7}" for lab in INTENTS))
    for gold in INTENTS:
        lines.append(f"{gold:<12}" + "".join(f"{report.confusion[gold][p]:>7}" for p in INTENTS))
    if report.errors:
        lines += ["", f"mistakes ({len(report.errors)}):"]
        lines += [f"  line {ex.line}: expected {ex.label}, got {pred}: {ex.text}" for ex, pred in report.errors]
    return "\n".join(lines) + "\n"
