"""Opening a handoff: the consultant's card and a text to the customer, the kf transfer, the first alerts —
each step once. What staff do next (claims, commands, the SLA ladder) is bot/act/staff.py."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bot.act import steps
from bot.act.staff import Staff
from bot.content.team import Assignment, Team, on_duty, pick
from bot.records.handoffs import Handoff, Handoffs
from bot.records.store import Store
from bot.wecom import WeCom, WeComError, cards, derive_msgid
from bot.wecom.payloads import kf_text

# kf errors on service_state/trans (platform notes §2.8)
SERVICER_STOPPED, SESSION_ENDED, TRANSITION_REFUSED = 95019, 95013, 95016
MAX_REASSIGN = 3

Send = Callable[[str, str, dict[str, Any], str], "str | None"]  # (open_kfid, customer, payload, key) -> why not


class Desk:
    """Hands a customer to a consultant (or the kf queue and the team robot)."""

    def __init__(self, wecom: WeCom, store: Store, handoffs: Handoffs, team: Callable[[], Team | None], staff: Staff,
                 send: Send, now: Callable[[], datetime]) -> None:
        self.wecom = wecom
        self.store = store
        self.handoffs = handoffs
        self.team = team
        self.staff = staff
        self.send = send
        self.now = now

    def hand_off(self, open_kfid: str, customer: str, intent: str, matched: tuple[str, ...], text: str,
                 cause: str, key: str, fallback_reply: str | None) -> Handoff | None:
        """Card + text to the customer, transfer in kf, alert the consultant (or queue + team robot)."""
        team, now = self.team(), self.now()
        if team is None:  # no consultants configured: a recorded request and a polite reply
            self.store.record("handoff_requested", customer=customer, intent=intent, matched=list(matched), text=text)
            if fallback_reply:
                self.send(open_kfid, customer, kf_text(fallback_reply), f"{key}:reply")
            return None
        receiving = self.staff.receiving(open_kfid)
        team = self.staff.serving_team(team, receiving)  # WeCom's receiving servicers the YAML lacks, by default
        exclude: set[str] = set()
        resumed = self.handoffs.open_for(customer)
        for attempt in range(MAX_REASSIGN + 1):
            waiting = steps.pending()
            if resumed is not None and resumed.cause_msgid == cause and attempt == 0:  # a retry: keep its choice
                a = self._resume(team, resumed, intent)
            else:
                a = pick(team, owner=self.handoffs.owner_of(customer), receiving=receiving,
                         load=self.handoffs.load(), now=now, exclude=exclude, priority=intent == "complaint")
            if attempt == MAX_REASSIGN:
                a = Assignment(None, 2, "queue_none_receiving", supervisor=a.supervisor)
            h = self.handoffs.open(customer, open_kfid, intent, matched, text, a.userid,
                                   team.sla_seconds(intent), now, cause, off_hours=a.off_hours,
                                   queued_until=a.next_available)
            if h.consultant != a.userid and a.userid:
                h = self.handoffs.reassign(h.id, a.userid, now) or h
            consultant = team.get(a.userid)
            # The text first (who answers, and when), then the card it introduces; both before the transfer,
            # since in state 2 or 3 WeCom takes no more messages from the bot.
            self.send(open_kfid, customer, kf_text(cards.customer_text(
                consultant or team.get(a.next_userid), off_hours=a.off_hours, next_available=a.next_available,
                now=now, complaint=intent == "complaint", minutes=h.sla_seconds / 60,
                ahead=self._ahead(h) if a.userid is None else 0, texts=team.texts)), f"{key}:text:{a.userid or 'queue'}")
            if consultant is not None and steps.pending() == waiting:  # the card after its text, never before
                self.send(open_kfid, customer, cards.consultant_card(consultant), f"{key}:card:{consultant.userid}")
            if steps.pending() > waiting:
                return h  # the text or card waits for the retry: after the transfer WeCom would refuse it
            stopped = self._transfer(h, a.state, a.userid, f"{key}:trans:{a.userid or 'queue'}",
                                     team.texts["in_queue"] if a.userid is None and not a.off_hours else None)
            if stopped and a.userid:
                exclude.add(a.userid)
                receiving[a.userid] = 1
                self.staff.servicer_changed(open_kfid, a.userid, receiving=False)
                self.store.record("handoff_reassigned", handoff=h.id, frm=a.userid, reason="95019")
                continue
            break
        def opened() -> None:
            self.store.record("handoff_opened", handoff=h.id, customer=customer, intent=intent,
                              matched=list(matched), consultant=a.userid, state=a.state, reason=a.reason)
            self.store.count(f"handoff:{intent}")

        self.store.once(f"{key}:opened", opened)
        if a.off_hours:
            return h
        alerts = [(f"{key}:alert:{a.userid}", a.userid, 0)] if a.userid else []
        if a.supervisor:
            alerts.append((f"{key}:alert_sup:{a.supervisor}", a.supervisor, 0))
        if a.userid is None:
            # Queued: nobody was assigned, so everyone on duty who can pick it from the queue, and the
            # supervisors, are told (the team robot too, when configured); never nobody at all.
            alerts += [(f"{key}:alert_queue:{uid}", uid, level) for uid, level in self._queue_watchers(team, now)]
        for step, userid, level in alerts:
            steps.once(self.store, step, functools.partial(self.staff.alert, h, userid, level, step))
        if a.userid is None:
            steps.once(self.store, f"{key}:robot", functools.partial(self.staff.robot, h))
        return h

    def _transfer(self, h: Handoff, state: int, userid: str | None, key: str, queued_text: str | None) -> bool:
        """The kf transfer, as its own step; True when the servicer stopped receiving (95019: pick another).
        Entering the queue, the transfer's msg_code carries the one text WeCom allows there."""
        stopped = False
        code = ""

        def transfer() -> None:
            nonlocal stopped, code
            try:
                code = self.wecom.trans_service_state(h.open_kfid, h.customer, state, userid or "")
            except WeComError as exc:
                if exc.errcode == SERVICER_STOPPED and userid:
                    stopped = True
                elif exc.errcode in (SESSION_ENDED, TRANSITION_REFUSED):
                    self.store.record("handoff_transfer_refused", handoff=h.id, errcode=exc.errcode)
                else:
                    raise

        steps.once(self.store, key, transfer)
        if code and queued_text:  # valid 48 h, one text, only while the chat stays in the queue
            steps.once(self.store, f"{key}:queued_text", lambda: self.wecom.send_kf_on_event(
                code, derive_msgid(f"{key}:queued_text"), kf_text(queued_text)))
        return stopped

    def _ahead(self, h: Handoff) -> int:
        """Chats waiting in the kf queue that came before this one."""
        return sum(1 for o in self.handoffs.list("open") if o.id != h.id and not o.consultant
                   and not o.claimed_by and o.created_at <= h.created_at)

    @staticmethod
    def _queue_watchers(team: Team, now: datetime) -> list[tuple[str, int]]:
        """(userid, alert level) of those to tell about a queued chat: on-duty consultants, supervisors."""
        supervisors = {c.supervisor for c in team.consultants if c.supervisor}
        watchers = [(c.userid, 2 if c.userid in supervisors else 0) for c in team.consultants if on_duty(c, now)]
        known = {userid for userid, _ in watchers}
        watchers += [(userid, 2) for userid in sorted(supervisors - known)]
        return watchers

    @staticmethod
    def _resume(team: Team, h: Handoff, intent: str) -> Assignment:
        """The assignment an earlier attempt made for this handoff."""
        consultant = team.get(h.consultant)
        supervisor = consultant.supervisor if consultant and intent == "complaint" else None
        return Assignment(h.consultant, 3 if h.consultant else 2, "resumed", off_hours=h.off_hours,
                          next_available=h.queued_until if h.off_hours else None, supervisor=supervisor)

