"""Handoff numbers: counts, time to claim and to first human reply, share within SLA, escalations."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from bot.records.handoffs import Handoff, Handoffs

__all__ = ["stats", "percentile"]


def stats(book: Handoffs, now: datetime, since: datetime) -> dict[str, Any]:
    """Counts, time to claim and to first human reply (median, p90, share within SLA), escalations.

    Times are seconds from the SLA start. A handoff still waiting past its SLA counts as
    missed; one still waiting within its SLA is left out of the share.
    """
    handoffs = book.created_between(since, now)
    by_intent: dict[str, list[Handoff]] = {}
    by_consultant: dict[str, list[Handoff]] = {}
    for h in handoffs:
        by_intent.setdefault(h.intent, []).append(h)
        by_consultant.setdefault(h.holder or "queue", []).append(h)
    return {"since": since.astimezone(book.tz).isoformat(), "now": now.astimezone(book.tz).isoformat(),
            "total": _block(handoffs, now),
            "by_intent": {k: _block(v, now) for k, v in sorted(by_intent.items())},
            "by_consultant": {k: _block(v, now) for k, v in sorted(by_consultant.items())}}


def percentile(values: list[float], p: float) -> float | None:
    """Linear-interpolated percentile (p in 0..1) of `values`; None when empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = p * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _timing(handoffs: list[Handoff], now: datetime, attr: str) -> dict[str, Any]:
    """n, median, p90 (seconds) and share within SLA for one milestone (claimed_at / first_reply_at)."""
    samples: list[float] = []
    met = judged = 0
    for h in handoffs:
        at = getattr(h, attr)
        start = h.sla_start
        if at is not None:
            waited = max(0.0, (at - start).total_seconds())
            samples.append(waited)
            judged += 1
            met += waited <= h.sla_seconds
        elif (h.closed_at or now) > h.deadline:
            judged += 1  # still waiting past the SLA, or closed after it without: missed
    median, p90 = percentile(samples, 0.5), percentile(samples, 0.9)
    return {"n": len(samples), "median": None if median is None else round(median, 1),
            "p90": None if p90 is None else round(p90, 1),
            "within_sla": round(met / judged, 3) if judged else None}


def _block(handoffs: list[Handoff], now: datetime) -> dict[str, Any]:
    """The numbers for one group of handoffs."""
    states = {s: sum(h.state == s for h in handoffs) for s in ("open", "claimed", "answered", "closed")}
    levels: dict[str, int] = {}
    for h in handoffs:
        for e in h.escalations:
            levels[str(e.level)] = levels.get(str(e.level), 0) + 1
    return {"count": len(handoffs), **states,
            "off_hours": sum(h.off_hours for h in handoffs),
            "time_to_claim": _timing(handoffs, now, "claimed_at"),
            "time_to_first_reply": _timing(handoffs, now, "first_reply_at"),
            "escalated": sum(bool(h.escalations) for h in handoffs),
            "escalations": sum(len(h.escalations) for h in handoffs), "escalations_by_level": levels}
