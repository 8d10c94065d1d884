"""Channels on WeCom: customers who arrive through a code (tags, journey), lost ones, and `channels sync`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.act import steps
from bot.act.triggers import Triggers
from bot.content.channels import Channel, ChannelFile
from bot.records.channels import UNKNOWN, ChannelBook, ChannelWay
from bot.records.customers import Customers
from bot.records.store import Store
from bot.wecom import DUPLICATE_CHECK, ContactWay, WeCom, WeComError, cards

TAG_GROUP = "渠道"  # the corp tag group `channels sync` creates channel tags in
# contact way errors (platform notes §3.6): the config_id is not (any longer) a contact way; too many members
BAD_CONFIG_ID, TOO_MANY_USERS = 41044, 41041


@dataclass(frozen=True, slots=True)
class Synced:
    """What `channels sync` did for one channel: created, updated, replaced (a new code), unchanged or failed."""

    channel: Channel
    action: str
    url: str = ""
    error: str = ""


class Channels:
    """Where customers come from: attribution, a channel's tags and journey, lost contacts, syncing codes."""

    def __init__(self, wecom: WeCom, store: Store, customers: Customers, book: ChannelBook, triggers: Triggers,
                 channels: Callable[[], ChannelFile | None], kf_accounts: Callable[[], list[str]], agent_id: int,
                 tz: ZoneInfo,
                 clock: Callable[[], float] = time.time) -> None:
        self.wecom = wecom
        self.store = store
        self.customers = customers
        self.book = book
        self.triggers = triggers
        self.channels = channels
        self.kf_accounts = kf_accounts  # the kf accounts seen (none yet: WeCom's list; kf: true needs one)
        self.agent_id = agent_id
        self.tz = tz
        self.clock = clock

    def find(self, state: str) -> Channel | None:
        """The configured channel whose code carries `state`."""
        current = self.channels()
        return current.find(state) if current and state else None

    def welcome_for(self, state: str) -> str | None:
        """The channel's own welcome text, when the code that brought the customer has one."""
        channel = self.find(state)
        return channel.welcome if channel and channel.welcome else None

    def arrived(self, customer: str, state: str, staff: str, at: float, key: str) -> str | None:
        """A customer came through a code carrying `state`: attributed (an unknown state too, never dropped);
        on their first arrival through this channel its tags are set and its journey enrolled (a retried
        callback or a second scan of the same code does neither again); returns the channel id."""
        if not state:
            return None
        channel = self.find(state)
        cid = channel.id if channel else (state if self.book.way(state) else UNKNOWN)
        arrival = self.book.attribute(customer, cid, at, state)
        if not arrival.new:
            return cid
        self.store.record("channel_arrived", customer=customer, channel=cid, state=state, staff=staff,
                          first=arrival.first)
        self.store.count(f"channel_arrived:{cid}")
        if channel is None:
            return cid
        for tag in channel.tags:
            self.customers.tag(customer, tag, at)
            self.triggers.tagged(customer, tag, at)
        ids = self.book.tag_ids()
        corp = [ids[t] for t in channel.tags if t in ids]
        if staff and corp:
            steps.once(self.store, f"{key}:channel_tags", lambda: self.wecom.mark_tag(staff, customer, corp))
        if channel.journey and (engine := self.triggers.engine()):
            engine.enroll_journey(customer, channel.journey, datetime.fromtimestamp(at, self.tz))
        return cid

    def coupon_issued(self, customer: str, campaign: str, at: float) -> None:
        """A coupon reached the customer: counted for their channel, and credited with a purchase that follows."""
        self.book.note(customer, "coupon", datetime.fromtimestamp(at, self.tz))
        self.book.touched(customer, f"coupon:{campaign}", at)

    def lost(self, customer: str, staff: str, at: float, key: str) -> None:
        """The customer deleted the staff member (del_follow_user): counted against the channel, and the staff
        member is told in the app."""
        self.book.note(customer, "lost", datetime.fromtimestamp(at, self.tz))
        if not staff:
            return
        cid = self.book.channel_of(customer)
        channel = self.find(cid) if cid else None
        came = f"（来自渠道「{channel.name if channel else cid}」）" if cid and cid != UNKNOWN else ""
        name = self.customers.name(customer) or customer
        text = f"流失提醒：客户 {name}{came} 已将您从微信好友中删除，TA 的 SOP 旅程已停止。"
        step = f"{key}:lost_notice"
        # The body of the first try is kept: a retry after a lost answer is the same message, which WeCom's
        # duplicate check drops.
        body = steps.prepared(self.store, step, lambda: {**cards.app_text(staff, self.agent_id, text),
                                                         **DUPLICATE_CHECK})
        steps.once(self.store, step, lambda: self.wecom.send_app_message(body))

    # ---- channels sync -------------------------------------------------------------------------

    def sync(self) -> tuple[list[Synced], str]:
        """Create or update each channel's code on WeCom, and the channel tags; idempotent: a channel whose
        code matches YAML (and still exists on WeCom) is not touched. Channels removed from YAML keep their
        codes and history. Returns what was done per channel, and why the tags could not be synced ("": they were)."""
        current = self.channels()
        if current is None:
            return [], ""
        try:
            self._sync_tags(current)
            tags_error = ""
        except WeComError as exc:  # the codes do not depend on the tags: go on
            tags_error = _said(exc)
            self.store.record("channel_tags_failed", errcode=exc.errcode, error=exc.errmsg)
        return [self._sync_one(c) for c in current.channels], tags_error

    def _sync_tags(self, current: ChannelFile) -> None:
        """Resolve the channel tags' corp tag ids from WeCom (a tag deleted there is made again)."""
        wanted = sorted({t for c in current.channels if c.staff for t in c.tags})
        if not wanted:
            return
        have = self.wecom.corp_tags()
        missing = [t for t in wanted if t not in have]
        if missing:
            have.update(self.wecom.add_corp_tags(TAG_GROUP, missing))
        self.book.save_tag_ids({t: have[t] for t in wanted if t in have})

    def _sync_one(self, channel: Channel) -> Synced:
        old = self.book.way(channel.id)
        try:
            if old and old.fingerprint == channel.fingerprint() and old.url and self._still_there(old):
                return Synced(channel, "unchanged", old.url)
            made, action = self._make(channel, old)
        except (WeComError, ValueError) as exc:
            said = _said(exc) if isinstance(exc, WeComError) else str(exc)
            self.store.record("channel_sync_failed", channel=channel.id, error=said)
            return Synced(channel, "failed", old.url if old else "", said)
        self.book.save_way(channel.id, ChannelWay(channel.kind, made.url, made.config_id, channel.fingerprint(),
                                                  self.clock(), channel.name))
        self.store.record("channel_synced", channel=channel.id, action=action)
        return Synced(channel, action, made.url)

    def _still_there(self, way: ChannelWay) -> bool:
        """A staff code still exists on WeCom (someone may have deleted it there); kf links have no id to ask."""
        if not way.config_id:
            return True
        try:
            self.wecom.get_contact_way(way.config_id)
        except WeComError as exc:
            if exc.errcode == BAD_CONFIG_ID:
                return False
            raise
        return True

    def _make(self, channel: Channel, old: ChannelWay | None) -> tuple[ContactWay, str]:
        """The channel's code: a kf link, an updated staff code, or a new one ("replaced": print it again)."""
        if channel.kf:
            return self.wecom.kf_contact_way(self._kfid(channel), channel.id), "updated" if old else "created"
        if old and old.config_id:
            try:
                self.wecom.update_contact_way(old.config_id, channel.id, list(channel.staff), channel.skip_verify,
                                              channel.remark)
                return ContactWay(old.config_id, old.url), "updated"
            except WeComError as exc:
                # 41044: deleted on WeCom; 41041: a one-member code cannot take several (its type is fixed)
                if exc.errcode not in (BAD_CONFIG_ID, TOO_MANY_USERS):
                    raise
            return self._add(channel), "replaced"
        return self._add(channel), "created"

    def _kfid(self, channel: Channel) -> str:
        if channel.kf != "default":
            return channel.kf
        known = self.kf_accounts() or self.wecom.kf_account_ids()
        if len(known) != 1:
            raise ValueError(f"kf: true needs exactly one kf account, {len(known)} known "
                             f"({', '.join(known) or 'none'}): write kf: <open_kfid>")
        return known[0]

    def _add(self, channel: Channel) -> ContactWay:
        return self.wecom.add_contact_way(channel.id, list(channel.staff), channel.skip_verify, channel.remark)


def _said(exc: WeComError) -> str:
    """A WeCom error in one line (without an errcode when there was no answer)."""
    return f"errcode {exc.errcode}: {exc.errmsg}" if exc.errcode is not None else exc.errmsg
