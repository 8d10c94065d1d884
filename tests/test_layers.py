"""The layout's rules, read from the source: who may import whom, and no import loops.

Every import statement counts, also those inside functions and under TYPE_CHECKING: a loop that
only a late import keeps from failing at start is still a loop.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "handlers", "intents", "sop")
# What handlers/, intents/ and sop/ may use from bot/.
ALLOWED_FROM_BOT = {"bot.yamlfile", "bot.times"}
INNER = ("handlers", "intents", "sop")
# A WeCom endpoint path as the client is called with it ("kf/send_msg", "externalcontact/mark_tag", ...).
ENDPOINT = re.compile(r"(gettoken|(kf|message|externalcontact|webhook|user|department)/[a-z_/]+)")


@dataclass(frozen=True)
class Import:
    """One imported module, where it is imported."""

    source: str  # importing module
    target: str  # imported module (resolved to a module of ours when it is one)
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of ours."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = modules()


def _ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _resolve(name: str) -> str:
    """The module of ours a dotted name lives in (`bot.wecom.WeCom` -> `bot.wecom`)."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def imports() -> Iterator[Import]:
    """Every import of a module of ours by a module of ours."""
    for source, path in MODULES.items():
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from . import x / from .a import b
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from bot.wecom import cards` imports the module bot.wecom.cards
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
            for name in names:
                if _ours(name):
                    yield Import(source, _resolve(name), path, node.lineno)


def edges() -> dict[str, set[str]]:
    """Module -> the modules it makes Python run: what it imports, and the packages those live in."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in imports():
        targets = [imp.target]
        parent = imp.target.rpartition(".")[0]
        while parent:  # importing bot.content.team runs bot/content/__init__.py first
            targets.append(parent)
            parent = parent.rpartition(".")[0]
        for t in targets:
            if t in MODULES and t != imp.source and not imp.source.startswith(t + "."):
                graph[imp.source].add(t)
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def package_of(module: str) -> str:
    """The unit of the package rule: handlers, intents, sop, each folder of bot/, each file directly in bot/."""
    parts = module.split(".")
    if parts[0] != "bot" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[:2])


def test_the_scan_sees_the_tree() -> None:
    names = set(MODULES)
    assert {"bot.runtime", "bot.wecom", "bot.wecom.client", "handlers.actions", "sop.engine", "intents.classify"} <= names
    sources = {imp.source for imp in imports()}
    assert "bot.runtime" in sources and "handlers" in sources


def test_handlers_intents_and_sop_use_only_yamlfile_and_times_from_bot() -> None:
    breaches = [f"{imp.where()}: {imp.source} imports {imp.target}" for imp in imports()
                if imp.source.split(".")[0] in INNER and imp.target.split(".")[0] == "bot"
                and imp.target not in ALLOWED_FROM_BOT]
    assert not breaches, "only bot.yamlfile and bot.times may be imported here:\n" + "\n".join(breaches)


def test_no_import_cycle_between_modules() -> None:
    found = cycles(edges())
    assert not found, "import cycles between modules:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_import_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for source, targets in edges().items():
        for target in targets:
            a, b = package_of(source), package_of(target)
            if a != b:
                graph.setdefault(a, set()).add(b)
    found = cycles(graph)
    assert not found, "import cycles between packages:\n" + "\n".join(" <-> ".join(c) for c in found)


def _strings(tree: ast.AST) -> Iterator[ast.Constant]:
    """String constants that are not docstrings."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def test_wecom_endpoint_paths_only_in_bot_wecom() -> None:
    found = []
    for module, path in MODULES.items():
        if module == "bot.wecom" or module.startswith("bot.wecom."):
            continue
        for node in _strings(ast.parse(path.read_text(encoding="utf-8"))):
            if ENDPOINT.fullmatch(node.value.strip("/")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "WeCom endpoints belong behind a typed method in bot/wecom/:\n" + "\n".join(found)


def test_the_checks_catch_a_loop() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
