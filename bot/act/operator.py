"""What an operator does by hand, from the console or the CLI: close or reassign a handoff, replay dead letters,
pause or resume a journey. Each action is recorded in the event stream with who did it: by="console" and the
client address, or by="cli:<os user>"."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import redis

from bot.act.staff import Staff
from bot.records.store import Store
from sop import engine as sop_engine

__all__ = ["Operator", "CLOSED_BY_OPERATOR"]

CLOSED_BY_OPERATOR = "operator"  # the close reason of a handoff an operator closed (labels.CLOSE_REASONS)


class DeadLetters(Protocol):
    """The inbox's dead letters (bot.queue.inbox.Inbox)."""

    def replay(self, ids: list[str] | None = None) -> int: ...


@dataclass
class Operator:
    """Operator actions over the running bot's Redis; `staff()` acts against WeCom (built when needed)."""

    r: redis.Redis
    staff: Callable[[], Staff | None]
    now: Callable[[], datetime]
    inbox: DeadLetters

    @property
    def store(self) -> Store:
        return Store(self.r)

    def _staff(self) -> Staff:
        staff = self.staff()
        if staff is None:
            raise LookupError("no WeCom client to act through")
        return staff

    def close(self, ref: str, by: str, client: str = "") -> str:
        """Close a handoff (its long id or the day's number) and end the kf session, so the bot answers the
        customer again: "closed", "already_closed" or "unknown"."""
        staff = self._staff()
        h = staff.handoffs.find(ref, self.now())
        if h is None:
            return "unknown"
        if h.state == "closed":
            return "already_closed"
        staff.close(h, CLOSED_BY_OPERATOR, by=by, client=client)
        return "closed"

    def reassign(self, ref: str, userid: str, by: str, client: str = "") -> str:
        """Give a handoff to `userid`: the record, the kf transfer (state 3, the new servicer) and the alert card,
        as 转给同事 does: "reassigned", "same", "too_late" (answered or closed), "unknown_consultant" or "unknown"."""
        staff = self._staff()
        h = staff.handoffs.find(ref, self.now())
        if h is None:
            return "unknown"
        if h.state not in ("open", "claimed"):
            return "too_late"
        if h.consultant == userid and not h.claimed_by:
            return "same"
        team = staff.team()
        if (team is None or team.get(userid) is None) and staff.receiving(h.open_kfid).get(userid) != 0:
            return "unknown_consultant"  # neither in content/consultants.yaml nor a receiving kf servicer
        frm = h.holder or h.consultant or ""
        if staff.pass_to(h, userid, f"operator-reassign:{h.id}:{userid}:{secrets.token_hex(4)}") is None:
            return "too_late"
        self.store.record("handoff_reassigned", handoff=h.id, frm=frm, to=userid, by=by, client=client,
                          customer=h.customer)
        return "reassigned"

    def replay(self, ids: list[str] | None, by: str, client: str = "") -> int:
        """Put dead letters (those with `ids`, or all) back into the inbox; how many."""
        n = self.inbox.replay(ids or None)
        self.store.record("dead_letters_replayed", ids=ids or [], count=n, by=by, client=client)
        return n

    def pause(self, journey: str, by: str, client: str = "") -> bool:
        """Pause a journey: its due touches are deferred, not sent, until resume. False if already paused."""
        new = sop_engine.pause(self.r, journey, by, self.now())
        if new:
            self.store.record("journey_paused", journey=journey, by=by, client=client)
        return new

    def resume(self, journey: str, by: str, client: str = "") -> int | None:
        """Resume a paused journey: the touches held while it was paused are due again now. None if it was not
        paused, else how many touches were held."""
        released = sop_engine.resume(self.r, journey, self.now())
        if released is not None:
            self.store.record("journey_resumed", journey=journey, released=released, by=by, client=client)
        return released
