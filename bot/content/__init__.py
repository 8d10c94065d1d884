"""Operator-edited files (keywords, FAQ, coupons): fatal errors at start, kept running version on reload."""

from __future__ import annotations

import functools
import logging
import threading
import time
from pathlib import Path
from typing import Any

import redis

from bot.config import Settings
from bot.yamlfile import ConfigError

log = logging.getLogger("bot.content")


def _mtime(path: Path) -> float:
    """A file's mtime; for a directory, the newest of itself and its YAML files."""
    if not path.exists():
        return 0.0
    if path.is_dir():
        return max([path.stat().st_mtime, *(f.stat().st_mtime for f in path.glob("*.yaml"))])
    return path.stat().st_mtime


def _mtimes(paths: Any) -> tuple[float, ...]:
    return tuple(_mtime(Path(p)) for p in paths.values())


@functools.lru_cache(maxsize=4)
def _classifier(keywords: Path, faq: Path | None, mtimes: tuple[float, ...]) -> Any:
    """Loading jieba and the keyword files costs a second: once per process per file version."""
    from intents.classify import load_classifier

    return load_classifier(keywords, faq)


def load_content(settings: Settings, r: redis.Redis) -> dict[str, Any]:
    """Load every file named in config.yaml `content`; raises ConfigError naming file, line and key."""
    content: dict[str, Any] = {}
    paths = settings.content
    if paths.get("keywords"):
        content["classifier"] = _classifier(paths["keywords"], paths.get("faq"), _mtimes(paths))
    if paths.get("coupons"):
        from bot.content.campaigns import load_campaigns
        from bot.records.coupons import CouponBook

        tz = settings.timezone
        content["coupons"] = CouponBook(r, load_campaigns(paths["coupons"], tz), tz)
    if paths.get("journeys"):
        from sop import journeys

        content["journeys"] = journeys.load(paths["journeys"])
    if content.get("journeys") and content.get("coupons"):
        _check_campaigns(content["journeys"], content["coupons"])
    if paths.get("consultants"):
        from bot.content.team import load_team

        content["team"] = load_team(paths["consultants"], settings.timezone)
    return content


def _check_campaigns(journeys: Any, book: Any) -> None:
    """Every coupon a journey step names must be a configured campaign."""
    known = {c.name for c in book.campaigns}
    for journey in journeys:
        for step in journey.steps:
            name = ((step.content or {}).get("coupon") or {}).get("campaign")
            if name and name not in known:
                source = Path(journey.source) if journey.source else Path("sop/journeys")
                line = _line_of(source, f"campaign: {name}")
                raise ConfigError(f"{source}:{line}: {journey.id}.{step.id}.content.coupon.campaign: unknown coupon "
                                  f"campaign {name!r} (configured: {', '.join(sorted(known))})")


def _line_of(path: Path, needle: str) -> int:
    """The first line of `path` containing `needle` (1 when not found)."""
    try:
        return next((i for i, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in text), 1)
    except OSError:
        return 1


class Content:
    """The loaded files; `get()` picks up edits, at most one check every `check_every` seconds."""

    def __init__(self, settings: Settings, r: redis.Redis, check_every: float = 2.0):
        self.settings = settings
        self.r = r
        self.check_every = check_every
        self.error: str | None = None
        self._items = load_content(settings, r)
        self._mtimes = _mtimes(settings.content)
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self._engine: tuple[Any, Any] | None = None  # (journeys, engine)

    def get(self, name: str) -> Any:
        """The current object for `name` (classifier, coupons), or None."""
        if time.monotonic() - self._checked >= self.check_every:
            self.reload_if_changed()
        return self._items.get(name)

    def engine(self) -> Any:
        """The SOP engine over the journeys as currently loaded (None when none are configured)."""
        journeys = self.get("journeys")
        if journeys is None:
            return None
        if self._engine is None or self._engine[0] is not journeys:
            from bot.queue.inbox import Inbox
            from sop.engine import Engine
            from sop.plan import Rules

            self._engine = (journeys, Engine(self.r, journeys, Rules(), self.settings.timezone, Inbox(self.r)))
        return self._engine[1]

    def reload_if_changed(self, force: bool = False) -> bool:
        """Reload when a file changed (or `force`); an invalid edit is logged and the running version stays."""
        with self._lock:
            self._checked = time.monotonic()
            mtimes = _mtimes(self.settings.content)
            if mtimes == self._mtimes and not force:
                return False
            self._mtimes = mtimes
            try:
                self._items = load_content(self.settings, self.r)
            except ConfigError as exc:
                self.error = str(exc)
                log.error("content not reloaded, keeping the running version: %s", exc)
                return False
            self.error = None
            log.info("content reloaded")
            return True
