"""Operator-edited files (keywords, FAQ, coupons, journeys, consultants, channels): fatal errors at start, the running
version kept on a bad reload."""

from __future__ import annotations

import functools
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from bot import yamlfile
from bot.config import Settings
from bot.yamlfile import ConfigError, KeyPath

if TYPE_CHECKING:
    from bot.content.campaigns import Campaign
    from bot.content.channels import ChannelFile
    from bot.content.team import Team
    from intents.classify import Classifier
    from sop.journeys import Journey

log = logging.getLogger("bot.content")


def _mtime(path: Path) -> float:
    """A file's mtime; for a directory, the newest of itself and its YAML and TSV files."""
    if not path.exists():
        return 0.0
    if path.is_dir():
        files = [*path.glob("*.yaml"), *path.glob("*.tsv")]
        return max([path.stat().st_mtime, *(f.stat().st_mtime for f in files)])
    return path.stat().st_mtime


def _mtimes(paths: Any) -> tuple[float, ...]:
    return tuple(_mtime(Path(p)) for p in paths.values())


# The files the classifier is built from (an edit of another file does not retrain it).
CLASSIFIER_FILES = ("keywords", "faq", "examples", "dialect")


@functools.lru_cache(maxsize=4)
def _classifier(keywords: Path, faq: Path | None, examples: Path | None, dialect: Path | None,
                mtimes: tuple[float, ...]) -> Classifier:
    """Loading jieba, the files and the model costs a second or more: once per process per version."""
    from intents.classify import load_classifier

    return load_classifier(keywords, faq, examples, dialect)


def load_content(settings: Settings, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Load every file named in config.yaml `content` (but `skip`); a ConfigError names file, line and key."""
    content: dict[str, Any] = {}
    paths = settings.content
    if paths.get("keywords") and "classifier" not in skip:
        own = {name: paths[name] for name in CLASSIFIER_FILES if paths.get(name)}
        content["classifier"] = _classifier(paths["keywords"], paths.get("faq"), paths.get("examples"),
                                            paths.get("dialect"), _mtimes(own))
    if paths.get("coupons"):
        from bot.content.campaigns import load_campaigns

        content["campaigns"] = load_campaigns(paths["coupons"], settings.timezone)
    if paths.get("journeys"):
        from sop import journeys

        content["journeys"] = journeys.load(paths["journeys"])
    if content.get("journeys") and content.get("campaigns"):
        _check_campaigns(content["journeys"], content["campaigns"])
    if paths.get("consultants"):
        from bot.content.team import load_team

        content["team"] = load_team(paths["consultants"], settings.timezone)
    if paths.get("channels"):
        from bot.content.channels import load_channels

        known = frozenset(j.id for j in content["journeys"]) if "journeys" in content else None
        content["channels"] = load_channels(paths["channels"], known)
    return content


def _check_campaigns(journeys: tuple[Journey, ...], campaigns: tuple[Campaign, ...]) -> None:
    """Every coupon a step names is a configured campaign; a step experiment's is not an experiment itself."""
    known = {c.name for c in campaigns}
    tested = {c.name for c in campaigns if c.experiment is not None}
    for journey, step in ((j, s) for j in journeys for s in j.steps):
        for i, content in enumerate(step.contents()):  # a step's own, or each of its variants'
            name = ((content or {}).get("coupon") or {}).get("campaign")
            if name and name not in known:
                source = Path(journey.source) if journey.source else Path("sop/journeys")
                line = _line_of(source, f"campaign: {name}")
                raise ConfigError(f"{source}:{line}: {journey.id}.{step.id}.content.coupon.campaign: unknown coupon "
                                  f"campaign {name!r} (configured: {', '.join(sorted(known))})")
            if name in tested and step.experiment is not None:
                raise _step_error(journey, step.id, ("variants", i, "content", "coupon", "campaign"),
                                  f"coupon campaign {name!r} is an experiment itself (coupon:{name}): a step "
                                  "experiment may not give its coupon, or that campaign's holdout customers would get "
                                  "nothing in every arm of the step; name a campaign without variants, or drop the "
                                  "step's variants")


def _step_error(journey: Journey, step: str, keys: KeyPath, message: str) -> ConfigError:
    """A ConfigError at `keys` of a journey's step, with the journey file's line and key path."""
    if not journey.source:
        return ConfigError(f"{journey.id}.{step}.{yamlfile.render_path(keys)}: {message}")
    doc = yamlfile.load(journey.source)
    data, root = doc.data, cast(KeyPath, ())
    if isinstance(data, dict) and isinstance(data.get("journeys"), list):  # a file of several journeys
        found = [k for k, j in enumerate(data["journeys"]) if isinstance(j, dict) and j.get("id") == journey.id]
        data, root = (data["journeys"][found[0]], ("journeys", found[0])) if found else ({}, ())
    steps = data.get("steps") if isinstance(data, dict) else None
    at = next((k for k, s in enumerate(steps or []) if isinstance(s, dict) and s.get("id") == step), None)
    return doc.error((*root, "steps", at, *keys) if at is not None else root, message)


def _line_of(path: Path, needle: str) -> int:
    """The first line of `path` containing `needle` (1 when not found)."""
    try:
        return next((i for i, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in text), 1)
    except OSError:
        return 1


class Content:
    """The loaded files; reading a property picks up edits, at most one check every `check_every` seconds.
    It builds no Redis object: the runtime turns campaigns and journeys into the coupon book and engine."""

    def __init__(self, settings: Settings, check_every: float = 2.0, lazy: tuple[str, ...] = ()) -> None:
        """`lazy`: items loaded on first use (commands that never classify skip jieba and the model)."""
        self.settings = settings
        self.check_every = check_every
        self.error: str | None = None
        self._lazy = frozenset(lazy)
        try:
            self._items = load_content(settings, self._lazy)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - start-up says one line, never a traceback
            files = ", ".join(str(path) for path in settings.content.values())
            raise ConfigError(f"{files}: cannot load ({type(exc).__name__}: {exc})") from None
        self._mtimes = _mtimes(settings.content)
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self._reloading: threading.Thread | None = None
        self.version = 0  # +1 on every reload that took effect

    def get(self, name: str) -> Any:
        """The current object for `name` (classifier, campaigns, journeys, team), or None."""
        if name in self._lazy:
            with self._lock:
                if name in self._lazy:
                    try:
                        self._items = {**self._items, **load_content(self.settings, self._lazy - {name})}
                    except ConfigError as exc:
                        self.error = str(exc)
                        raise
                    self._lazy = self._lazy - {name}
        if time.monotonic() - self._checked >= self.check_every:
            self._reload_in_background()
        return self._items.get(name)

    def wait_reload(self, timeout: float = 60.0) -> None:
        """Wait for a reload started by get() to finish (tests and commands that must see the edit)."""
        thread = self._reloading
        if thread is not None:
            thread.join(timeout)

    def _reload_in_background(self) -> None:
        """Start one reload off the message path when a file changed; messages keep the running version."""
        self._checked = time.monotonic()
        if _mtimes(self.settings.content) == self._mtimes:
            return
        with self._lock:
            if self._reloading is not None and self._reloading.is_alive():
                return
            self._reloading = threading.Thread(target=self.reload_if_changed, name="content-reload", daemon=True)
            self._reloading.start()

    @property
    def classifier(self) -> Classifier | None:
        """The intent classifier (content.keywords, content.faq)."""
        return self.get("classifier")

    @property
    def campaigns(self) -> tuple[Campaign, ...] | None:
        """The coupon campaigns (content.coupons)."""
        return self.get("campaigns")

    @property
    def journeys(self) -> tuple[Journey, ...] | None:
        """The SOP journeys (content.journeys)."""
        return self.get("journeys")

    @property
    def team(self) -> Team | None:
        """The consultants (content.consultants)."""
        return self.get("team")

    @property
    def channels(self) -> ChannelFile | None:
        """The channels (content.channels)."""
        return self.get("channels")

    def reload_if_changed(self, force: bool = False) -> bool:
        """Reload when a file changed (or `force`); an invalid edit is logged and the running version stays.
        Parsing and training run without the lock: readers keep the running version meanwhile."""
        self._checked = time.monotonic()
        mtimes = _mtimes(self.settings.content)
        if mtimes == self._mtimes and not force:
            return False
        changed = [name for name, before, now in zip(self.settings.content, self._mtimes, mtimes, strict=False)
                   if before != now] if len(mtimes) == len(self._mtimes) else list(self.settings.content)
        try:
            items = load_content(self.settings, self._lazy)
        except Exception as exc:  # noqa: BLE001 - any broken edit keeps the running version
            message = str(exc) if isinstance(exc, ConfigError) else \
                f"{', '.join(str(self.settings.content[n]) for n in changed)}: {type(exc).__name__}: {exc}"
            self.error = message
            self._mtimes = mtimes
            log.error("content not reloaded, keeping the running version: %s", message)
            return False
        with self._lock:
            self._items, self._mtimes = items, mtimes
            self.error = None
            self.version += 1
        log.info("content reloaded (%s)", ", ".join(str(self.settings.content[n]) for n in changed) or "forced")
        return True
