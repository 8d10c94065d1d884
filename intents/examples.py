"""Labelled messages: text<TAB>label[<TAB>kind] files, for training (intents/examples/) and evaluation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bot.yamlfile import ConfigError

LABELS = ("complaint", "human", "price", "discount", "unsubscribe", "greeting", "other")


@dataclass(frozen=True)
class Example:
    """One labelled message and where it was written."""

    text: str
    label: str
    kind: str
    line: int
    source: str = ""


def read_examples(path: Path | str) -> list[Example]:
    """Read a labelled TSV; a header line (first field 'text'), blank lines and # comments are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}:1: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if fields[0] == "text" and number == 1:
            continue
        if len(fields) < 2 or fields[1].strip() not in LABELS:
            raise ConfigError(f"{path}:{number}: expected text<TAB>label with label one of: {', '.join(LABELS)}")
        kind = fields[2].strip() if len(fields) > 2 else ""
        out.append(Example(fields[0], fields[1].strip(), kind, number, path.stem))
    return out


def example_files(path: Path | str) -> list[Path]:
    """The .tsv files of an examples folder (sorted), or the one file named."""
    path = Path(path)
    if path.is_dir():
        return sorted(path.glob("*.tsv"))
    return [path]


def load_corpus(path: Path | str) -> list[Example]:
    """Every example of a folder (or file); a broken line is a ConfigError with file and line."""
    files = example_files(path)
    if not files:
        raise ConfigError(f"{path}:1: no .tsv example files")
    return [ex for f in files for ex in read_examples(f)]


def digest(path: Path | str) -> str:
    """A hash of the examples' bytes (the model cache key part for the corpus)."""
    h = hashlib.sha256()
    for f in example_files(path):
        h.update(f.name.encode())
        try:
            h.update(f.read_bytes())
        except OSError:
            pass
    return h.hexdigest()
