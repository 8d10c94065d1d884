"""YAML files operators edit: loaded with line numbers so every error names file, line and key."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]
TIME_RE = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


class ConfigError(ValueError):
    """A configuration file is wrong; the message names file, line and key."""


def time_of_day(value: Any) -> time | None:
    """"20:00" -> time(20, 0); unquoted 20:00 (YAML 1.1 reads it as the number 1200) is accepted too."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return time(*divmod(value, 60))
    if isinstance(value, str) and (m := TIME_RE.fullmatch(value.strip())):
        return time(int(m.group(1)), int(m.group(2)))
    return None


def time_problem(value: Any) -> str:
    """Why `value` is not a time of day, in plain words (an unquoted 25:00 arrives as the number 1500)."""
    if isinstance(value, int) and not isinstance(value, bool):
        hours, minutes = divmod(value, 60)
        return (f"{hours}:{minutes:02d} is not a time of day (YAML read it unquoted as the number {value}); "
                f'write times in quotes, e.g. at: "20:00"')
    if isinstance(value, str):
        return f"{value!r} is not a time of day (HH:MM, from 00:00 to 23:59)"
    return f'{shown(value)} is not a time of day; write it in quotes as HH:MM, e.g. at: "20:00"'


# PyYAML's wording -> what an operator should do about it.
PLAIN_YAML = (
    ("could not find expected ':'", "a line here is not `key: value` (a missing colon, or an unclosed quote?)"),
    ("mapping values are not allowed", "a value contains `: `; put the value in quotes"),
    ("cannot start any token", "a tab or a special character starts a value; indent with spaces, quote the value"),
    ("expected <block end>", "the indentation is off: keys of one level must line up"),
    ("did not find expected key", "the indentation is off, or a list item lacks its `- `"),
    ("did not find expected '-' indicator", "the indentation of this list is off"),
    ("found unexpected end of stream", "a quote or bracket is not closed"),
    ("expected ',' or ']'", "a [list] is not closed with ]"),
    ("expected ',' or '}'", "a {mapping} is not closed with }"),
    ("while scanning a quoted scalar", "a quote is not closed"),
    ("found duplicate anchor", "an anchor (&name) is defined twice"),
)


def _plain(exc: yaml.MarkedYAMLError) -> tuple[int, str]:
    """The line of the mistake (the context mark when the parser noticed it a line later) and a sentence."""
    problem, context = exc.problem_mark, exc.context_mark
    # A key or quote the scanner started on an earlier line is where the mistake is; for the rest the
    # problem mark is (the context there is only the start of the enclosing block).
    scanning = (exc.context or "").startswith(("while scanning a simple key", "while scanning a quoted scalar"))
    mark = context if context is not None and (problem is None or scanning) else problem
    line = mark.line + 1 if mark else 1
    said = f"{exc.context or ''} {exc.problem or ''}"
    plain = next((words for key, words in PLAIN_YAML if key in said), None)
    return line, f"{plain} (YAML: {exc.problem or exc})" if plain else str(exc.problem or exc)


def text(doc: Doc, keypath: KeyPath, value: Any) -> str:
    """`value` when it is non-empty text (as written), else a ConfigError at `keypath`."""
    if not isinstance(value, str) or not value.strip():
        raise doc.error(keypath, f"expected non-empty text, got {shown(value)}")
    return value


def number(doc: Doc, keypath: KeyPath, value: Any, *, minimum: float | None = None,
           maximum: float | None = None, whole: bool = False) -> float:
    """A number within [minimum, maximum] (a whole one when `whole`); the error names file, line and key."""
    kind = "a whole number" if whole else "a number"
    bounds = (f" from {minimum:g} to {maximum:g}" if minimum is not None and maximum is not None
              else f" >= {minimum:g}" if minimum is not None else f" <= {maximum:g}" if maximum is not None else "")
    ok = not isinstance(value, bool) and isinstance(value, int if whole else int | float)
    if not ok or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise doc.error(keypath, f"expected {kind}{bounds}, got {shown(value)}")
    return float(value)


def choice(doc: Doc, keypath: KeyPath, value: Any, options: Mapping[str, str] | Sequence[str]) -> str:
    """One of `options` (words, or word -> what it means); the error lists them."""
    if value not in options:
        listed = ", ".join(f"{word} ({options[word]})" if isinstance(options, Mapping) else word
                           for word in options)
        raise doc.error(keypath, f"expected one of {listed}; got {shown(value)}")
    return str(value)


def shown(value: Any) -> str:
    """A value's type and repr, for error messages ("nothing" for a missing value)."""
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"


def render_path(keypath: KeyPath) -> str:
    """('steps', 2, 'coupon') -> 'steps[2].coupon'."""
    out = ""
    for part in keypath:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Doc:
    """A parsed YAML document plus the line of every key in it."""

    path: Path
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line(self, keypath: KeyPath) -> int:
        """Line of `keypath`, or of its nearest ancestor that has one."""
        while keypath and keypath not in self.lines:
            keypath = keypath[:-1]
        return self.lines.get(keypath, 1)

    def error(self, keypath: KeyPath, message: str) -> ConfigError:
        """A ConfigError pointing at `keypath`."""
        where = f": {render_path(keypath)}" if keypath else ""
        return ConfigError(f"{self.path}:{self.line(keypath)}{where}: {message}")


def _build(node: yaml.Node, keypath: KeyPath, lines: dict[KeyPath, int], loader: yaml.SafeLoader) -> Any:
    lines.setdefault(keypath, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            child = (*keypath, str(key))
            lines[child] = key_node.start_mark.line + 1
            out[key] = _build(value_node, child, lines, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*keypath, i), lines, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


# Operator files are small; a larger one is a mistake (or an attack), refused before parsing.
MAX_BYTES = 2 * 2**20


def _refuse_aliases(text: str, path: Path) -> None:
    """Anchors and aliases (&x / *x) are refused: expanding them can grow without bound (alias bombs)."""
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            line = event.start_mark.line + 1 if event.start_mark else 1
            raise ConfigError(f"{path}:{line}: YAML anchors and aliases (&name, *name) are not "
                              "allowed in operator files: write the value out")


def parse(text: str, path: Path | str = "<string>") -> Doc:
    """Parse YAML text; a syntax error becomes a ConfigError with file and line."""
    path = Path(path)
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{path}:1: file too large ({len(text)} characters, at most {MAX_BYTES})")
    loader = yaml.SafeLoader(text)
    try:
        _refuse_aliases(text, path)
        node = loader.get_single_node()
        lines: dict[KeyPath, int] = {}
        data = _build(node, (), lines, loader) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        line, words = _plain(exc)
        raise ConfigError(f"{path}:{line}: invalid YAML: {words}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}:1: invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}:1: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    return Doc(path, data, lines)


def load(path: Path | str) -> Doc:
    """Read and parse a YAML file; a missing or unreadable file is a ConfigError too."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}:1: cannot read: {exc.strerror or exc}") from None
    return parse(text, path)
