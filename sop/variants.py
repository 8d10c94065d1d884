"""Experiments (A/B with a holdout) declared in YAML: their arms, and which arm a customer is in (pure).

A journey step or a coupon campaign may declare `variants:` (each a name, a weight and its own content) and a
`holdout:` share that gets nothing. Assignment is a hash of the experiment id and the customer: the same customer
always lands in the same arm for the same weights; bot/records/experiments.py records the first assignment in
Redis, so a weight edit later changes nothing for customers already assigned."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from bot import yamlfile
from bot.yamlfile import ConfigError, Doc, KeyPath, shown

__all__ = ["Arm", "Experiment", "HOLDOUT", "OUTCOMES", "EXPERIMENT_KEYS", "bucket", "parse_experiment"]

HOLDOUT = "holdout"  # the arm of customers who get nothing (对照组)
# What is measured per arm, within the window after assignment (bot/records/outcomes.py notes them).
OUTCOMES = ("replied", "redeemed", "purchased", "unsubscribed", "contact_deleted")
EXPERIMENT_KEYS = frozenset({"variants", "holdout", "window_days", "metric"})
DEFAULT_WINDOW_DAYS = 7
DEFAULT_METRIC = "purchased"
MAX_HOLDOUT = 0.9
MAX_WINDOW_DAYS = 90
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Arm:
    """One variant: its name and its weight among the variants."""

    name: str
    weight: float


@dataclass(frozen=True, slots=True)
class Experiment:
    """Variants with weights, a holdout share, the outcome window and the outcome the verdict is about."""

    id: str  # journey_id.step_id, or coupon:campaign_name
    arms: tuple[Arm, ...]
    holdout: float = 0.0
    window_days: int = DEFAULT_WINDOW_DAYS
    metric: str = DEFAULT_METRIC

    def shares(self) -> dict[str, float]:
        """Arm name -> the share of customers it gets (the holdout first when there is one)."""
        total = sum(a.weight for a in self.arms)
        out = {HOLDOUT: self.holdout} if self.holdout else {}
        return out | {a.name: (1 - self.holdout) * a.weight / total for a in self.arms}

    def pick(self, customer: str) -> str:
        """The arm `customer` falls in with the current weights: the holdout first, then by cumulative weight."""
        u = bucket(self.id, customer)
        if u < self.holdout:
            return HOLDOUT
        x = (u - self.holdout) / (1 - self.holdout) * sum(a.weight for a in self.arms)
        for arm in self.arms:
            x -= arm.weight
            if x < 0:
                return arm.name
        return self.arms[-1].name


def bucket(experiment: str, customer: str) -> float:
    """A number in [0, 1) from sha256(experiment id | customer): uniform, stable, independent across experiments."""
    digest = hashlib.sha256(f"{experiment}|{customer}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class _Reader:
    """Reads one experiment's keys, collecting errors with file, line and key."""

    def __init__(self, doc: Doc, at: KeyPath, errors: list[ConfigError]) -> None:
        self.doc, self.at, self.errors = doc, at, errors

    def err(self, keypath: KeyPath, message: str) -> None:
        self.errors.append(self.doc.error(keypath, message))

    def checked(self, read: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """read(doc, ...), or None with its error collected."""
        try:
            return read(self.doc, *args, **kw)
        except ConfigError as exc:
            self.errors.append(exc)
            return None

    def settings(self, data: Mapping[str, Any]) -> tuple[float | None, int | None, str | None]:
        """holdout (default 0), window_days (default 7) and metric (default purchased); None where invalid."""
        at = self.at
        holdout = self.checked(yamlfile.number, (*at, "holdout"), data["holdout"], minimum=0,
                               maximum=MAX_HOLDOUT) if "holdout" in data else 0.0
        window = self.checked(yamlfile.number, (*at, "window_days"), data["window_days"], minimum=1,
                              maximum=MAX_WINDOW_DAYS, whole=True) if "window_days" in data else DEFAULT_WINDOW_DAYS
        metric = self.checked(yamlfile.choice, (*at, "metric"), data["metric"], OUTCOMES) \
            if "metric" in data else DEFAULT_METRIC
        return holdout, None if window is None else int(window), metric

    def arm(self, where: KeyPath, item: Any, keys: set[str], seen: set[str]) -> Arm | None:
        """One variant's name and weight (its own part is read by the caller's `body`)."""
        if not isinstance(item, dict):
            self.err(where, f"expected a mapping ({', '.join(sorted(keys))}), got {shown(item)}")
            return None
        for key in item:
            if str(key) not in keys:
                self.err((*where, str(key)), f"unknown key (expected one of {', '.join(sorted(keys))})")
        name = item.get("name")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name == HOLDOUT:
            self.err((*where, "name") if "name" in item else where,
                     f"a variant needs a name of letters, digits, '_' or '-' (not {HOLDOUT!r}), got {shown(name)}")
            return None
        if name in seen:
            self.err((*where, "name"), f"duplicate variant name {name!r}")
            return None
        seen.add(name)
        weight = self.checked(yamlfile.number, (*where, "weight"), item["weight"], minimum=0) \
            if "weight" in item else 1.0
        if weight is not None and weight <= 0:
            self.err((*where, "weight"), f"must be more than 0, got {weight:g}")
        return Arm(name, weight) if weight is not None and weight > 0 else None


def parse_experiment(doc: Doc, at: KeyPath, data: Mapping[str, Any], experiment_id: str,
                     errors: list[ConfigError], body: Callable[[KeyPath, dict[str, Any]], T | None],
                     allowed: Iterable[str]) -> tuple[Experiment, dict[str, T]] | None:
    """The experiment a step or campaign mapping declares (None without `variants:`), and each variant's own part
    as `body` reads it (keys `allowed` besides name and weight). Problems go to `errors`, with file, line and key."""
    n, read = len(errors), _Reader(doc, at, errors)
    if "variants" not in data:
        for key in sorted(EXPERIMENT_KEYS & set(data)):
            read.err((*at, key), f"{key} without variants (an experiment needs its variants: name, weight, content)")
        return None
    raw = data["variants"]
    if not isinstance(raw, list) or not raw:
        read.err((*at, "variants"), f"expected a list of variants (name, weight, ...), got {shown(raw)}")
        return None
    holdout, window, metric = read.settings(data)
    if len(raw) < 2 and not holdout:
        read.err((*at, "variants"), "an experiment needs two variants, or one variant and a holdout share")
    keys, seen = {"name", "weight", *allowed}, set[str]()
    parts: dict[Arm, T] = {}
    for i, item in enumerate(raw):
        arm = read.arm((*at, "variants", i), item, keys, seen)
        part = body((*at, "variants", i), item) if isinstance(item, dict) and arm is not None else None
        if arm is not None and part is not None:
            parts[arm] = part
    if len(errors) > n or holdout is None or window is None or metric is None:
        return None
    return (Experiment(experiment_id, tuple(parts), float(holdout), window, metric),
            {arm.name: part for arm, part in parts.items()})
