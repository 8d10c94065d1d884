"""What customers did after a touch, fanned out to whoever measures it (experiments, channels).

bot/act/triggers.py notes every outcome here; bot/runtime.py builds one Outcomes with its recorders."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from bot.times import aware
from sop.variants import OUTCOMES as KINDS

__all__ = ["KINDS", "Outcomes", "Recorder"]

log = logging.getLogger(__name__)

# (customer, kind, at, amount): amount only for "purchased" (the order's amount, when known).
Recorder = Callable[[str, str, datetime, float | None], None]


class Outcomes:
    """Calls every registered recorder for each outcome; one that fails is logged and the others still run."""

    def __init__(self, recorders: Iterable[Recorder] = ()) -> None:
        self.recorders: list[Recorder] = list(recorders)

    def register(self, recorder: Recorder) -> None:
        """Add a recorder (while the runtime is being built)."""
        self.recorders.append(recorder)

    def note(self, customer: str, kind: str, at: datetime, amount: float | None = None) -> None:
        """`customer` replied, redeemed a coupon, purchased (with its amount), unsubscribed or deleted the contact."""
        if kind not in KINDS:
            raise ValueError(f"unknown outcome {kind!r} (expected one of {', '.join(KINDS)})")
        aware(at, "at")
        for recorder in self.recorders:
            try:
                recorder(customer, kind, at, amount)
            except Exception:  # noqa: BLE001 - a measurement must never fail the message or order it follows
                log.exception("outcome recorder %r failed for %s %s", recorder, customer, kind)
