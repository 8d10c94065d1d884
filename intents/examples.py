"""Labelled messages: text<TAB>label[<TAB>kind] files, for training (intents/examples/) and evaluation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bot.yamlfile import ConfigError

from .labels import INTENTS as LABELS


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
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}:1: cannot read: {exc.strerror or exc}") from None
    return parse_examples(data, path)


def parse_examples(data: bytes, path: Path) -> list[Example]:
    """Parse the bytes of a labelled TSV (see read_examples)."""
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}:1: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
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
    return read_corpus(path)[0]


def read_corpus(path: Path | str) -> tuple[list[Example], str]:
    """The examples of a folder (or file) and a hash of exactly the bytes they were parsed from."""
    files = example_files(path)
    if not files:
        raise ConfigError(f"{path}:1: no .tsv example files")
    h, out = hashlib.sha256(), []
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{f}:1: cannot read: {exc.strerror or exc}") from None
        h.update(f.name.encode() + b"\0" + data)
        out += parse_examples(data, f)
    labels = {ex.label for ex in out}
    if len(labels) < 2:
        raise ConfigError(f"{files[0]}:1: the examples must cover at least two labels (found: "
                          f"{', '.join(sorted(labels)) or 'no example'})")
    return out, h.hexdigest()
