"""What staff see and do around a handoff: alert cards, card clicks, app commands, the SLA ladder, wake-ups
and closing — each step once. Opening a handoff is bot/act/desk.py."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from bot.act import steps
from bot.content.team import (
    Consultant,
    Team,
    next_on_duty,
    on_duty,
    pick,
    servicer_consultant,
    with_servicers,
)
from bot.records.coupons import CouponBook
from bot.records.customers import Customers
from bot.records.handoffs import MAX_LEVEL, ClaimResult, Handoff, Handoffs
from bot.records.store import Store
from bot.wecom import (
    APP_MESSAGE,
    DUPLICATE_CHECK,
    ROBOT,
    WeCom,
    WeComError,
    WeComRateLimited,
    cards,
    transient,
)

log = logging.getLogger("bot.act.staff")

APP_MESSAGES_PER_MINUTE = 28  # WeCom drops what exceeds 30 per member per minute; keep a margin
ROBOT_PER_MINUTE = 20  # a group robot takes 20 messages a minute (45009 past that)
ROBOT_PENDING = "wecom:robot:pending"  # handoffs waiting for the robot's next summary message
ROBOT_SUMMARY_MAX = 30  # handoffs named in one summary (the rest wait for the next)
CARD_CODE_VALID = timedelta(hours=72) - timedelta(minutes=5)  # a card's response_code: once, within 72 h
COUPON_ORDER = {"issued": 0, "redeemed": 1, "expired": 2}  # on the card: unused first
VERBS = {"我的": "mine", "我的转接": "mine", "list": "mine", "接待": "claim", "claim": "claim",
         "结束": "close", "关闭": "close", "close": "close"}
# kf/servicer/list is the truth at most this old (by the bot's clock); servicer_status_change patches it between
SERVICERS_FRESH_SECONDS = 60
SERVICERS_FETCHED = ""  # the field of the cached list holding when it was fetched (a userid is never empty)
# Patch one servicer's status into the cached list, only while there is one (else the next read fetches it).
PATCH_SERVICER_LUA = """
if redis.call('exists', KEYS[1]) == 1 then redis.call('hset', KEYS[1], ARGV[1], ARGV[2]) return 1 end
return 0
"""
NAME_SECONDS = 86400  # a member's WeCom name is remembered a day
NAME_MISS_SECONDS = 600  # a name WeCom would not give is asked again after 10 minutes
SERVICER_STOPPED = 95019  # service_state/trans: the servicer stopped receiving (platform notes §2.8)
# `接待 12`, `接待12`, `接待 #12`, `结束 2606011a2b3c4d5e`
COMMAND_RE = re.compile(r"(我的转接|我的|list|接待|claim|结束|关闭|close)\s*(\S*)\s*$", re.IGNORECASE)


class Staff:
    """Performs what staff need against WeCom; the records live in bot/records/handoffs.py."""

    def __init__(self, wecom: WeCom, store: Store, customers: Customers, handoffs: Handoffs,
                 team: Callable[[], Team | None], agent_id: int, now: Callable[[], datetime],
                 coupons: Callable[[], CouponBook | None] = lambda: None) -> None:
        self.wecom = wecom
        self.store = store
        self.customers = customers
        self.handoffs = handoffs
        self.team = team
        self.agent_id = agent_id
        self.now = now
        self.coupons = coupons
        self._patch_servicer = customers.r.register_script(PATCH_SERVICER_LUA)

    def receiving(self, open_kfid: str) -> dict[str, int]:
        """kf servicer status by userid (0 receiving, 1 stopped): kf/servicer/list, cached in Redis for
        SERVICERS_FRESH_SECONDS and patched by servicer_status_change meanwhile; empty when the API fails."""
        r, key, now = self.customers.r, _servicers_key(open_kfid), self.now().timestamp()
        cached = r.hgetall(key)
        fetched = cached.pop(SERVICERS_FETCHED, None)
        if fetched is not None and 0 <= now - float(fetched) < SERVICERS_FRESH_SECONDS:
            return {userid: int(status) for userid, status in cached.items()}
        try:
            listed = self.wecom.servicers(open_kfid)
        except WeComError as exc:
            log.warning("servicer/list failed (%s); assuming nobody is receiving", exc)
            return {}
        with r.pipeline() as p:
            p.delete(key)  # not chained: redis-py's cluster pipeline returns None from delete()
            p.hset(key, mapping={SERVICERS_FETCHED: now, **listed})
            p.expire(key, SERVICERS_FRESH_SECONDS).execute()
        return listed

    def servicer_changed(self, open_kfid: str, userid: str, receiving: bool) -> None:
        """A servicer started or stopped receiving (servicer_status_change, or a 95019 on a transfer): the
        cached list says so at once, without waiting for the next kf/servicer/list."""
        patched = self._patch_servicer(keys=[_servicers_key(open_kfid)], args=[userid, 0 if receiving else 1])
        self.store.record("servicer_status", open_kfid=open_kfid, servicer=userid, receiving=receiving,
                          cached=bool(patched))

    def serving_team(self, team: Team, receiving: dict[str, int]) -> Team:
        """`team` with the receiving servicers it does not list, as default consultants named by WeCom."""
        unknown = [u for u, status in receiving.items() if status == 0 and team.get(u) is None]
        return with_servicers(team, receiving, {u: self.member_name(u) for u in unknown})

    def member_name(self, userid: str) -> str:
        """A member's WeCom name (the directory's, remembered a day); the userid when WeCom gives none."""
        r, key = self.customers.r, f"wecom:member:{{{userid}}}:name"
        cached = r.get(key)
        if cached is not None:
            return str(cached) or userid
        try:
            name = self.wecom.member_name(userid)
        except WeComError as exc:  # a name must never hold up a handoff
            if not transient(exc):
                r.set(key, "", ex=NAME_MISS_SECONDS)
            return userid
        r.set(key, name or "", ex=NAME_SECONDS if name else NAME_MISS_SECONDS)
        return name or userid

    def consultant(self, team: Team, userid: str) -> Consultant:
        """The YAML consultant, or a kf servicer the YAML does not list, with the defaults and their WeCom name."""
        return team.get(userid) or servicer_consultant(userid, self.member_name(userid), team.tz)

    def alert(self, h: Handoff, userid: str, level: int, key: str) -> None:
        """A claimable template card to `userid` (level 0 the consultant, 1 backup, 2 supervisor); the step
        `key` keeps its body, so a retry is the same message and WeCom's duplicate check drops it."""
        def build() -> dict[str, Any]:
            team = self.team()
            record = self.customers.get(h.customer)
            task_id = cards.new_task_id(h.id, f"l{level}{userid[:20]}")
            consultant = self.consultant(team, h.consultant) if team and h.consultant else None
            return {**cards.alert_card(h, consultant, self.customer_name(h.customer),
                                       self.customers.recent(h.customer), list(record.tags),
                                       self.coupon_lines(h.customer), task_id, agentid=self.agent_id, touser=userid,
                                       level=level, now=self.now()),
                    **DUPLICATE_CHECK}

        body = steps.prepared(self.store, key, build)
        self.within_rate(userid)
        res = self.wecom.send_app_message(body)
        task_id = str(body["template_card"]["task_id"])
        self.handoffs.set_card(h.id, task_id, res.get("response_code"), to=userid, at=self.now())
        self.store.record("staff_alert", handoff=h.id, to=userid, level=level)

    def coupon_lines(self, customer: str) -> list[str]:
        """The customer's coupons for the alert card: unused first (soonest to expire), then used and
        expired ones (newest first); title, code, state, expiry."""
        book, now = self.coupons(), self.now()
        if book is None:
            return []
        held = sorted(book.coupons_of(customer, now=now), key=lambda c: (
            COUPON_ORDER.get(c.status, 3), c.expires_at.timestamp() if c.status == "issued" else -c.issued_at.timestamp()))
        by_name = book.by_name  # a coupon of an A/B variant is shown with that variant's title
        return [cards.coupon_line(by_name[c.campaign].arm(c.variant).title if c.campaign in by_name else c.campaign,
                                  c.code, c.status, c.expires_at, now) for c in held]

    def customer_name(self, customer: str) -> str:
        """The customer's WeChat nickname (kf/customer/batchget), remembered; the id when unknown."""
        name = self.customers.name(customer)
        if name:
            return name
        try:
            name = self.wecom.kf_customer_nickname(customer)
        except WeComError:
            name = None
        if name:
            self.customers.set_name(customer, name)
        return name or customer

    def staff_name(self, userid: str) -> str:
        """A consultant's name (小李), else the member's WeCom name, else the userid."""
        team = self.team()
        consultant = team.get(userid) if team else None
        return consultant.name if consultant else self.member_name(userid)

    def within_rate(self, userid: str) -> None:
        """WeCom silently drops app messages past 30 per member per minute: wait for the next minute
        instead (the entry is retried), never drop."""
        minute = int(self.now().timestamp() // 60)
        key = f"wecom:rate:app:{{{userid}}}:{minute}"
        with self.customers.r.pipeline() as p:
            count, _ = p.incr(key).expire(key, 120).execute()
        if count > APP_MESSAGES_PER_MINUTE:
            raise WeComRateLimited(None, f"{userid} already got {APP_MESSAGES_PER_MINUTE} app messages this minute",
                                   APP_MESSAGE)

    def robot(self, h: Handoff) -> None:
        """The team group robot (last rung, or nobody to assign), within its 20 messages a minute: past
        the last free slot of a minute the handoff waits for the next summary message instead."""
        team = self.team()
        key = team.robot_key() if team else None
        if not key:
            self.store.record("robot_not_configured", handoff=h.id)
            return
        if not self._robot_slot(key, ROBOT_PER_MINUTE - 1):  # the last slot is the summary's
            self.customers.r.rpush(ROBOT_PENDING, h.id)
            self.store.record("robot_deferred", handoff=h.id)
            return
        notified = [e.to for e in h.escalations]
        self.wecom.send_robot(key, cards.robot_text(h, h.customer, now=self.now(), notified=notified))
        self.store.record("robot_alert", handoff=h.id)

    def robot_summary(self) -> str:
        """One robot message for the handoffs that waited for a free minute; returns how many it named."""
        team = self.team()
        key = team.robot_key() if team else None
        r = self.customers.r
        ids = r.lrange(ROBOT_PENDING, 0, ROBOT_SUMMARY_MAX - 1)
        if not key or not ids:
            return "none"
        waiting = [h for h in (self.handoffs.get(i) for i in ids) if h and h.state != "closed" and not h.claimed_by]
        if waiting:
            if not self._robot_slot(key, ROBOT_PER_MINUTE):
                raise WeComRateLimited(45009, "the team robot's minute is used up", ROBOT)
            self.wecom.send_robot(key, cards.robot_summary_text(waiting, now=self.now()))
        r.ltrim(ROBOT_PENDING, len(ids), -1)
        self.store.record("robot_summary", handoffs=[h.id for h in waiting])
        return str(len(waiting))

    def robot_pending(self) -> int:
        """Handoffs waiting for the robot's next summary."""
        return int(self.customers.r.llen(ROBOT_PENDING))

    def _robot_slot(self, key: str, limit: int) -> bool:
        """Take one of the robot's messages of this minute (at most `limit` of them)."""
        minute = int(self.now().timestamp() // 60)
        name = f"wecom:rate:robot:{{{hashlib.sha256(key.encode()).hexdigest()[:16]}}}:{minute}"
        with self.customers.r.pipeline() as p:
            count, _ = p.incr(name).expire(name, 120).execute()
        return int(count) <= limit

    def click(self, userid: str, event_key: str, response_code: str) -> str:
        """A staff member tapped a button on an alert card; returns the outcome."""
        parsed = cards.parse_button_key(event_key)
        if parsed is None:
            return "unknown_button"
        action, hid = parsed
        now, team = self.now(), self.team()
        h = self.handoffs.get(hid)
        if h is None or h.state == "closed":
            self._update(response_code, userid, "已结束" if h else "无效转接")
            return "closed" if h else "unknown"

        name = self.staff_name
        if action == "claim":
            res = self._claim(h, userid, now, clicked=response_code)
            if res.status == "taken_by_other":
                holder = (res.handoff.holder if res.handoff else None) or ""
                self._update(response_code, userid, f"已由{name(holder)}接待")
                self.wecom.send_app_message(cards.app_text(userid, self.agent_id, f"该客户已由{name(holder)}接待，无需处理。"))
            return res.status
        # pass to a colleague; the choice is kept, so a retried click does not pick yet another one
        if team is None:
            return "no_team"
        choice = f"pass:{hid}:{userid}:{response_code}"
        target = self.store.done_value(choice)
        if target is None:
            receiving = self.receiving(h.open_kfid)
            a = pick(self.serving_team(team, receiving), owner=None, receiving=receiving, load=self.handoffs.load(),
                     now=now, exclude={userid})
            if a.userid is None:
                self.wecom.send_app_message(cards.app_text(userid, self.agent_id, "暂无其他在线顾问可转交，请您接待。"))
                return "nobody"
            target = a.userid
        if self.pass_to(h, target, choice) is None:
            return "too_late"
        self.store.once(f"{choice}:card", lambda: self._update(response_code, userid, f"已转给{name(target)}"))
        return "passed"

    def pass_to(self, h: Handoff, target: str, key: str) -> Handoff | None:
        """Hand `h` to `target`: the record is reassigned (a claim released), the kf chat transferred to them
        (service state 3) and they get the alert card; each step once under `key`, so a retry finishes what a
        crash left. None when the handoff can no longer be reassigned (answered or closed)."""
        if self.store.done_value(key) is None:
            if self.handoffs.reassign(h.id, target, self.now()) is None:
                return None
            self.store.mark_done(key, target)
        moved = self.handoffs.get(h.id) or h
        self.store.once(f"{key}:trans", lambda: self._transfer(moved, target))
        steps.once(self.store, f"{key}:alert", lambda: self.alert(moved, target, 0, f"{key}:alert"))
        return moved

    def _claim(self, h: Handoff, userid: str, now: datetime, *, clicked: str = "") -> ClaimResult:
        """`userid` claims `h` (a card click with its `clicked` response_code, or `接待`): the first claimer wins,
        someone the SLA ladder called may take over an unanswered chat; the chat moves to the claimer in kf,
        and every copy of the alert then reads 已由<name>接待 (the clicked one through the click's code)."""
        res = self.handoffs.claim(h.id, userid, now)
        if res.status == "taken_by_other" and h.first_reply_at is None and userid in {e.to for e in h.escalations}:
            # The holder claimed but never answered; whoever the SLA ladder called may take over.
            self.handoffs.reassign(h.id, userid, now)
            res = self.handoffs.claim(h.id, userid, now)
        if res.status in ("claimed", "already_yours"):
            if h.consultant and h.consultant != userid:  # a backup or supervisor took over
                self._transfer(h, userid)
            if clicked:
                self._update(clicked, userid, f"已由{self.staff_name(userid)}接待")
            self.store.record("handoff_claimed", handoff=h.id, by=userid)
            self.claimed_everywhere(res.handoff or h, userid, clicked_by=userid if clicked else "")
        return res

    def claimed_everywhere(self, h: Handoff, userid: str, clicked_by: str = "") -> None:
        """Every copy of the alert (each card recorded by set_card) now reads 已由<name>接待, each once: a copy
        without a response_code, or whose code is past its 72 h, cannot be updated and is left; the copies
        of `clicked_by` were updated with the click's own code."""
        name, now = self.staff_name(userid), self.now()
        for card in h.cards:
            code, to, task_id = card.get("response_code") or "", card.get("to") or "", card.get("task_id") or ""
            key = f"card_claimed:{h.id}:{task_id}"
            if not code or not to or not task_id:
                continue
            if to == clicked_by:
                self.store.mark_done(key)  # that card was updated with the click's code
                continue
            sent = datetime.fromisoformat(card["at"]) if card.get("at") else None
            if sent is not None and now - sent > CARD_CODE_VALID:
                continue

            def update(code: str = code, to: str = to) -> None:
                self.wecom.update_template_card(cards.claimed_card_update(code, self.agent_id, [to], name))

            steps.once(self.store, key, update)

    def _transfer(self, h: Handoff, userid: str) -> None:
        try:
            self.wecom.trans_service_state(h.open_kfid, h.customer, 3, userid)
        except WeComError as exc:
            if exc.errcode == SERVICER_STOPPED:
                self.servicer_changed(h.open_kfid, userid, receiving=False)
            self.store.record("handoff_transfer_refused", handoff=h.id, errcode=exc.errcode, to=userid)

    def _update(self, response_code: str, userid: str, text: str) -> None:
        if not response_code:
            return
        try:
            self.wecom.update_template_card(cards.button_update(response_code, self.agent_id, [userid], text))
        except WeComError as exc:  # the code is single-use and expires after 72 h
            log.info("card not updated: %s", exc)

    def wake(self, hid: str) -> str:
        """An off-hours handoff at the start of working hours: assign, transfer and alert now."""
        h, team, now = self.handoffs.get(hid), self.team(), self.now()
        if h is None or h.state == "closed" or team is None or h.claimed_by or h.first_reply_at:
            return "not_needed"  # someone already picked the customer up from the queue
        receiving = self.receiving(h.open_kfid)
        a = pick(self.serving_team(team, receiving), owner=self.handoffs.owner_of(h.customer), receiving=receiving,
                 load=self.handoffs.load(), now=now, priority=h.intent == "complaint")
        if a.userid is None:
            self.robot(h)
            self.handoffs.set_card(h.id, cards.new_task_id(h.id, "robot"), None, to="robot")
            return "robot"
        h = self.handoffs.reassign(h.id, a.userid, now) or h
        self._transfer(h, a.userid)
        try:
            self.alert(h, a.userid, 0, f"wake:{h.id}:{a.userid}")
        except WeComRateLimited:
            raise
        except WeComError as exc:  # the SLA ladder (backup, supervisor, robot) still follows
            self.store.record("staff_alert_failed", handoff=h.id, to=a.userid, errcode=exc.errcode)
        return a.userid

    def escalate(self, hid: str, level: int) -> str:
        """One rung of the ladder: 1 backup, 2 supervisor, 3 team robot."""
        h, team, now = self.handoffs.get(hid), self.team(), self.now()
        if h is None or h.state == "closed" or h.first_reply_at is not None or h.level >= level:
            return "not_needed"
        if team and not any(on_duty(c, now) for c in team.consultants):
            # Outside everyone's working hours the clock waits: climb again when work starts.
            self.handoffs.postpone(hid, min(next_on_duty(c, now) for c in team.consultants))
            return "postponed"
        consultant = team.get(h.consultant) if team else None
        target = None
        if level == 1 and consultant and consultant.backup:
            target = consultant.backup
        elif level == 2 and consultant and consultant.supervisor:
            target = consultant.supervisor
        elif level == 2 and team:
            target = next((c.supervisor for c in team.consultants if c.supervisor), None)
        try:
            if level >= MAX_LEVEL or target is None:
                self.robot(h)
                target = "robot"
            else:
                self.alert(h, target, level, f"escalate:{hid}:{level}:{target}")
        except WeComRateLimited:
            raise  # retried after the minute: nothing is dropped
        except WeComError as exc:  # record and move on: the next rung must still come
            self.store.record("escalation_failed", handoff=hid, level=level, to=target, errcode=exc.errcode)
            target = f"failed:{target}"
        self.handoffs.escalate(hid, level, target, now)
        self.store.count("handoff_escalations")
        return target

    # -- events from the kf conversation -----------------------------------------------------

    def staff_replied(self, customer: str, servicer: str, at: datetime) -> None:
        """kf origin 5: the first human reply stops the SLA clock."""
        h = self.handoffs.first_reply(customer, servicer, at)
        if h is not None:
            self.store.record("handoff_first_reply", handoff=h.id, by=servicer)

    def session_changed(self, customer: str, change_type: int, servicer: str, at: datetime) -> None:
        """kf session_status_change: 1 picked up from the queue, 2 transferred, 3 ended."""
        h = self.handoffs.open_for(customer)
        if h is None:
            return
        if change_type == 3:
            self.handoffs.close(customer, at, "session_ended")
            self.store.record("handoff_closed", handoff=h.id, reason="session_ended")
        elif servicer and change_type == 1:
            res = self.handoffs.claim(h.id, servicer, at)
            if res.status in ("claimed", "already_yours"):
                self.claimed_everywhere(res.handoff or h, servicer)
        elif servicer and change_type == 2:
            self.handoffs.reassign(h.id, servicer, at)

    def close_idle(self, idle_seconds: float) -> int:
        """Close handoffs with no activity for `idle_seconds` (counted from when the SLA clock started,
        so an off-hours handoff waits for the morning), and give the chat back to the bot."""
        now, closed = self.now(), 0
        for h in self.handoffs.list("active"):
            if h.sla_start > now:
                continue
            last = max(t for t in (h.sla_start, h.claimed_at, h.first_reply_at) if t is not None)
            seen = self.customers.get(h.customer).last_inbound
            if (now - last).total_seconds() > idle_seconds and now.timestamp() - seen > idle_seconds:
                self.close(h, "idle")
                closed += 1
        return closed

    def close(self, h: Handoff, reason: str, **who: str) -> None:
        """Close the record and end the kf session, so the customer's next message reaches the bot; `who`
        (by, client) goes into the handoff_closed event."""
        self.handoffs.close_id(h.id, self.now(), reason)
        self.customers.release(h.customer)
        try:
            self.wecom.trans_service_state(h.open_kfid, h.customer, 4)
        except WeComError as exc:  # e.g. already ended (95013) or not allowed from this state (95016)
            self.store.record("handoff_end_refused", handoff=h.id, errcode=exc.errcode)
        self.store.record("handoff_closed", handoff=h.id, reason=reason, **who)

    # -- staff commands to the app -----------------------------------------------------------

    def command(self, userid: str, text: str) -> str:
        """`我的` lists my open handoffs; `接待 12` claims (the day's number, or the long id); `结束 12` closes.
        Answers in the app."""
        text = text.strip()
        if not text:
            return "empty"
        m = COMMAND_RE.fullmatch(text)
        verb, arg = (VERBS[m.group(1).lower()], m.group(2)) if m else ("help", "")
        now = self.now()
        if verb == "mine" and not arg:
            reply = self._mine(userid, now)
        elif verb == "claim" and arg:
            reply = self._claim_command(userid, arg, now)
        elif verb == "close" and arg:
            h = self.handoffs.find(arg, now)
            if h is not None and h.state != "closed":
                self.close(h, f"closed_by:{userid}")
            reply = f"已结束 {h.ref}，机器人恢复接待" if h else f"找不到转接 {arg}，回复「我的」查看您的转接"
        else:
            verb = "help"
            reply = "可用指令：我的 / 接待 编号 / 结束 编号（编号见提醒卡片，如「接待 12」）"
        self.wecom.send_app_message(cards.app_text(userid, self.agent_id, reply))
        return verb

    def _claim_command(self, userid: str, arg: str, now: datetime) -> str:
        """`接待 12`: the answer to the claimer."""
        h = self.handoffs.find(arg, now)
        if h is None:
            return f"找不到转接 {arg}，回复「我的」查看您的转接"
        if h.state == "closed":
            return f"{h.ref} 已结束"
        res = self._claim(h, userid, now)
        who = self.display_name(h.customer)
        if res.status == "claimed":
            return f"已接待 {h.ref} {who}，请在微信客服中回复客户"
        if res.status == "already_yours":
            return f"{h.ref} {who} 已在您名下"
        if res.status == "taken_by_other":
            holder = (res.handoff.holder if res.handoff else None) or ""
            return f"{h.ref} 已由{self.staff_name(holder)}接待，无需处理"
        return f"无法接待 {h.ref}：{res.status}"

    def _mine(self, userid: str, now: datetime) -> str:
        """`我的`: the handoffs I hold, oldest first, as '#12 小明 询价 等待8分钟：...'."""
        mine = sorted((h for h in self.handoffs.list("active") if h.holder == userid), key=lambda h: h.created_at)
        return cards.mine_text([cards.mine_line(h, self.display_name(h.customer), now) for h in mine])

    def display_name(self, customer: str) -> str:
        """The nickname, or '客户…' and the id's last 4 characters when WeCom has none (never the raw id)."""
        name = self.customer_name(customer)
        return f"客户…{customer[-4:]}" if name == customer else name


def _servicers_key(open_kfid: str) -> str:
    """The cached kf/servicer/list of one kf account: userid -> status, and when it was fetched."""
    return f"wecom:servicers:{{{open_kfid}}}"
