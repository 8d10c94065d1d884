"""Pure WeCom payload builders for the handoff: consultant card, staff alert card, texts."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.content.team import DEFAULT_TEXTS, Consultant
from bot.wecom import clip
from intents.labels import LABELS_ZH

if TYPE_CHECKING:
    from bot.records.handoffs import Handoff

__all__ = [
    "INTENT_LABELS",
    "LIMITS",
    "TASK_ID_RE",
    "alert_card",
    "app_text",
    "button_update",
    "claim_keys",
    "claimed_card_update",
    "clip",
    "consultant_card",
    "coupon_line",
    "customer_text",
    "digest_text",
    "escalation_text",
    "history_line",
    "mine_line",
    "mine_text",
    "new_task_id",
    "parse_button_key",
    "robot_text",
    "valid_task_id",
]

Json = dict[str, Any]

# message/send template_card task_id: unique within the app, <=128 bytes of [0-9A-Za-z_-@]
TASK_ID_RE = re.compile(r"[0-9A-Za-z_\-@]{1,128}")

LIMITS = {
    # kf send_msg link: title <=128 B, desc <=512 B, url <=2048 B
    "link.title": 128, "link.desc": 512, "link.url": 2048,
    # message/send text.content and markdown.content: <=2048 B
    "text": 2048,
    # group robot markdown.content: <=4096 B
    "robot.markdown": 4096,
    # button key: <=1024 B (template_card doc). The remaining template_card fields have only
    # suggested lengths in characters; we keep 3 bytes per suggested character so that all-Chinese
    # text stays within the suggestion: source.desc 13, main_title.title 26, main_title.desc 30,
    # sub_title_text 112, keyname 5, value 26, quote title 26, button text 10.
    "button.key": 1024,
    "source.desc": 39, "main_title.title": 78, "main_title.desc": 90, "sub_title_text": 336,
    "keyname": 15, "value": 78, "quote.title": 78, "quote.text": 450, "button.text": 30,
}
MAX_HORIZONTAL = 6  # horizontal_content_list: at most 6 items
HISTORY_LINES = 5
HISTORY_LINE_BYTES = 120  # one remembered line in the quote (a long one must not push the others out)
MINE_TEXT_CHARS = 20  # the customer's words in one line of `我的`

# What a remembered "[msgtype]" line reads as (bot/act/executor.py remembers the msgtype of what is not text).
MSGTYPE_LABELS = {
    "business_card": "名片", "link": "链接", "image": "图片", "msgmenu": "菜单", "miniprogram": "小程序",
    "voice": "语音", "video": "视频", "file": "文件", "location": "位置", "ca_link": "获客链接",
    "channels_shop_product": "商品", "channels_shop_order": "订单", "merged_msg": "聊天记录",
    "channels": "视频号", "emotion": "表情", "event": "事件", "text": "文字",
}
COUPON_STATES = {"issued": "未使用", "redeemed": "已使用", "expired": "已过期"}

INTENT_LABELS = {name: LABELS_ZH[name] for name in ("price", "human", "complaint", "discount")}  # handoff causes
SOURCE_DESC = "私域助手·转人工"


# ---------------------------------------------------------------------------------------------
# Helpers


def valid_task_id(task_id: str) -> bool:
    """Whether a template_card task_id has the allowed length and characters."""
    return bool(TASK_ID_RE.fullmatch(task_id)) and len(task_id.encode()) <= 128


def new_task_id(handoff_id: str, tag: str = "alert") -> str:
    """A fresh task_id for a card about `handoff_id` (unique: random suffix)."""
    base = re.sub(r"[^0-9A-Za-z_\-@]", "_", f"ho-{handoff_id}-{tag}")[:110]
    return f"{base}-{secrets.token_hex(6)}"


def claim_keys(handoff_id: str) -> tuple[str, str]:
    """The button keys of an alert card: (claim, pass)."""
    return f"claim:{handoff_id}", f"pass:{handoff_id}"


def parse_button_key(key: str) -> tuple[str, str] | None:
    """'claim:<id>' -> ('claim', id); None for keys that are not ours."""
    action, _, hid = (key or "").partition(":")
    return (action, hid) if action in ("claim", "pass") and hid else None


def _label(intent: str) -> str:
    """Chinese label of an intent."""
    return INTENT_LABELS.get(intent, intent or "人工")


def _minutes(seconds: float) -> int:
    """Whole minutes for display, at least 1."""
    return max(1, round(seconds / 60))


def _when(moment: datetime, now: datetime | None = None) -> str:
    """'今天 09:00', '明天 09:00' or '2月2日 09:00' (local time of `moment`)."""
    if now is not None:
        days = (moment.date() - now.astimezone(moment.tzinfo).date()).days
        if days == 0:
            return f"今天 {moment:%H:%M}"
        if days == 1:
            return f"明天 {moment:%H:%M}"
    return f"{moment.month}月{moment.day}日 {moment:%H:%M}"


def _waited(seconds: float) -> str:
    """'8分钟', '1小时5分钟' (whole minutes, at least 1)."""
    minutes = _minutes(seconds)
    return f"{minutes // 60}小时{minutes % 60}分钟" if minutes >= 60 else f"{minutes}分钟"


def history_line(line: str) -> str:
    """A remembered line as staff read it: '客服：business_card' -> '客服：「名片」', '客服：link：标题' ->
    '客服：「链接：标题」', '客户：[image]' -> '客户：「图片」'; text on one line, cut to HISTORY_LINE_BYTES."""
    who, sep, rest = line.partition("：")
    if sep:
        # the bot's lines carry the bare msgtype, the customer's "[msgtype]" (a customer may type a word)
        shape = r"\[([a-z_]+)\]" if who == "客户" else r"([a-z_]+)(?:[：: ](.+))?"
        m = re.fullmatch(shape, rest.strip(), re.S)
        if m and m.group(1) in MSGTYPE_LABELS:
            title = m.group(2) if m.lastindex and m.lastindex > 1 else None
            line = f"{who}：「{MSGTYPE_LABELS[m.group(1)]}{'：' + title.strip() if title else ''}」"
    return clip(" ".join(line.split()), HISTORY_LINE_BYTES)  # one line each, however the text was written


def coupon_line(title: str, code: str, status: str, expires_at: datetime, now: datetime | None = None) -> str:
    """One coupon on the alert card, 'title CODE 未使用 至6月8日 23:59' (expiry in its own local time, the year
    when it is not this year's), the title shortened so that the whole fits a card value."""
    year = f"{expires_at.year}年" if now is not None and expires_at.year != now.astimezone(expires_at.tzinfo).year else ""
    rest = f" {code} {COUPON_STATES.get(status, status)} 至{year}{expires_at.month}月{expires_at.day}日 {expires_at:%H:%M}"
    return clip(clip(title, max(LIMITS["value"] - len(rest.encode()), 9)) + rest, LIMITS["value"])


# ---------------------------------------------------------------------------------------------
# Customer side (kf)


def consultant_card(consultant: Consultant, *, touser: str | None = None, open_kfid: str | None = None,
                    msgid: str | None = None) -> Json:
    """kf/send_msg body with the consultant's business_card or link card (touser etc. when given)."""
    card = consultant.card
    if card.type == "business_card":
        body: Json = {"msgtype": "business_card", "business_card": {"userid": consultant.userid}}
    else:
        link: Json = {"title": clip(card.title or consultant.name, LIMITS["link.title"]),
                      "desc": clip(card.desc or f"{consultant.title}{consultant.name}为您服务", LIMITS["link.desc"]),
                      "url": card.url}
        if len((card.url or "").encode()) > LIMITS["link.url"]:
            raise ValueError("link url longer than 2048 bytes")
        if card.thumb_media_id:
            link["thumb_media_id"] = card.thumb_media_id
        body = {"msgtype": "link", "link": link}
    extra = {k: v for k, v in (("touser", touser), ("open_kfid", open_kfid), ("msgid", msgid)) if v}
    return {**extra, **body}


def customer_text(consultant: Consultant | None, *, off_hours: bool = False, next_available: datetime | None = None,
                  now: datetime | None = None, complaint: bool = False, minutes: float = 5, ahead: int = 0,
                  texts: Mapping[str, str] = DEFAULT_TEXTS) -> str:
    """What the customer reads before the card and the transfer: who will answer and roughly when (a complaint
    starts with an apology, at any hour)."""
    who = f"{consultant.title}{consultant.name}" if consultant else "顾问"
    if off_hours:
        when = _when(next_available, now) if next_available else ""
        text = texts["off_hours"].format(when=when, who=who)
    elif consultant is None:
        text = texts["queued" if ahead else "queued_next"].format(ahead=ahead, minutes=_minutes(minutes * 60))
    else:
        text = texts["assigned"].format(who=who, minutes=_minutes(minutes * 60))
    return clip((texts["apology"] if complaint else "") + text, LIMITS["text"])


# ---------------------------------------------------------------------------------------------
# Staff side (app message/send)


def _title(handoff: Handoff, level: int) -> str:
    """main_title.title for an alert, led by the day's number when it has one."""
    minutes = _minutes(handoff.sla_seconds)
    number = f"#{handoff.no} " if handoff.no else ""
    if level > 0:
        return f"{number}【超时】客户{_label(handoff.intent)}，无人接待，请协助"
    if handoff.intent == "complaint":
        return f"{number}【优先】客户投诉，请{minutes}分钟内接待"
    if handoff.intent in INTENT_LABELS:
        return f"{number}客户{_label(handoff.intent)}，请{minutes}分钟内接待"
    return f"{number}客户需要人工，请{minutes}分钟内接待"


def _coupon_rows(coupons: Sequence[str], free: int) -> list[tuple[str, str]]:
    """One row per coupon in the rows left (at least one); what does not fit is counted on the last."""
    if not coupons:
        return [("优惠券", "无")]
    free = max(free, 1)
    if len(coupons) <= free:
        return [("优惠券", c) for c in coupons]
    shown = [("优惠券", c) for c in coupons[:free - 1]]
    more = len(coupons) - len(shown)
    return [*shown, ("优惠券", f"另有{more}张" if shown else f"共{more}张：{coupons[0]}")]


def alert_card(handoff: Handoff, consultant: Consultant | None, customer_name: str, history: Sequence[str],
               tags: Sequence[str], coupons: Sequence[str], task_id: str, *, agentid: int | None = None,
               touser: str | None = None, level: int = 0, now: datetime | None = None) -> Json:
    """message/send body: a button_interaction template_card with claim / pass buttons.

    `touser` defaults to the consultant; `level` > 0 marks an escalated alert (to a backup or
    supervisor); `history` is the last messages, oldest first, as remembered ("客户：...", "客服：link"),
    shown readable (history_line); `coupons` one line each (coupon_line), most useful first.
    """
    if not valid_task_id(task_id):
        raise ValueError(f"invalid task_id {task_id!r}: <=128 bytes of [0-9A-Za-z_-@]")
    target = touser or (consultant.userid if consultant else None)
    if not target:
        raise ValueError("alert_card needs a consultant or touser")
    matched = "、".join(handoff.matched)
    why = f"{_label(handoff.intent)}（{matched}）" if matched else _label(handoff.intent)
    rows = [("客户", customer_name or handoff.customer), ("原因", why), ("标签", "、".join(tags) or "无")]
    if consultant is not None:  # who has it: the consultant's own copy, the supervisor's, an escalation's
        rows.insert(2, ("原顾问" if level > 0 else "分配给", consultant.name))
    rows += _coupon_rows(coupons, MAX_HORIZONTAL - len(rows))
    horizontal = [{"keyname": clip(k, LIMITS["keyname"]), "value": clip(v, LIMITS["value"])}
                  for k, v in rows[:MAX_HORIZONTAL]]
    created = handoff.created_at
    how = f"回复「接待 {handoff.no}」也可接待" if handoff.no else f"编号 {handoff.id}"
    desc = f"{created:%m-%d %H:%M} · {how}"
    if level > 0 and now is not None:
        desc = f"已等待{_minutes((now - created).total_seconds())}分钟 · {how}"
    lines = [line for line in history if line]
    said = f"客户：{handoff.text}"
    if said in lines:  # already quoted as 客户说
        del lines[len(lines) - 1 - lines[::-1].index(said)]
    recent = [history_line(line) for line in lines[-HISTORY_LINES:]]
    quote = "客户说：" + handoff.text
    if recent:
        quote += "\n—— 最近消息 ——\n" + "\n".join(recent)
    sub = (f"请在{_minutes(handoff.sla_seconds)}分钟内回复客户；超时将依次提醒备岗、主管和团队群。"
           if level == 0 else "原顾问未及时接待，点「我来接待」后请在微信客服中回复客户。")
    if handoff.off_hours:
        sub = "客户在非工作时间留言，已告知上班后回复。" + sub
    claim, pass_ = claim_keys(handoff.id)
    card: Json = {
        "card_type": "button_interaction",
        "source": {"desc": clip(SOURCE_DESC, LIMITS["source.desc"]),
                   "desc_color": 2 if handoff.intent == "complaint" or level > 0 else 0},  # 0 gray, 2 red
        "main_title": {"title": clip(_title(handoff, level), LIMITS["main_title.title"]),
                       "desc": clip(desc, LIMITS["main_title.desc"])},
        "sub_title_text": clip(sub, LIMITS["sub_title_text"]),
        "horizontal_content_list": horizontal,
        "quote_area": {"type": 0, "title": clip("客户消息", LIMITS["quote.title"]),
                       "quote_text": clip(quote, LIMITS["quote.text"])},
        "task_id": task_id,
        "button_list": [
            {"text": clip("我来接待", LIMITS["button.text"]), "style": 1, "key": clip(claim, LIMITS["button.key"], "")},
            {"text": clip("转给同事", LIMITS["button.text"]), "style": 2, "key": clip(pass_, LIMITS["button.key"], "")},
        ],
    }
    body: Json = {"touser": target, "msgtype": "template_card", "template_card": card}
    if agentid is not None:
        body["agentid"] = agentid
    return body


def button_update(response_code: str, agentid: int, userids: Sequence[str], replace_name: str) -> Json:
    """message/update_template_card body that greys out the buttons with `replace_name`."""
    return {"userids": list(userids), "agentid": agentid, "response_code": response_code,
            "button": {"replace_name": clip(replace_name, LIMITS["button.text"])}}


def claimed_card_update(response_code: str, agentid: int, userids: Sequence[str], claimer_name: str) -> Json:
    """update_template_card body after a claim: the button reads 已由<name>接待."""
    name = clip(claimer_name, LIMITS["button.text"] - len("已由接待".encode()))
    return button_update(response_code, agentid, userids, f"已由{name}接待")


def app_text(touser: str | Sequence[str], agentid: int, content: str) -> Json:
    """message/send text body (content clipped to 2048 bytes)."""
    to = touser if isinstance(touser, str) else "|".join(touser)
    return {"touser": to, "agentid": agentid, "msgtype": "text", "text": {"content": clip(content, LIMITS["text"])}}


def escalation_text(handoff: Handoff, customer_name: str, *, level: int, now: datetime,
                    assigned_name: str | None = None) -> str:
    """Plain text for an escalated alert (level 1 backup, 2 supervisor), <=2048 bytes."""
    waited = _minutes((now - handoff.created_at).total_seconds())
    who = {1: "请您作为备岗协助接待", 2: "请主管安排接待"}.get(level, "请尽快安排接待")
    lines = [f"【超时未接待】客户{_label(handoff.intent)}已等待{waited}分钟，{who}。",
             f"客户：{customer_name or handoff.customer}",
             f"客户说：{handoff.text}"]
    if assigned_name:
        lines.append(f"原顾问：{assigned_name}")
    ref = handoff.no or handoff.id
    lines.append(f"编号：{handoff.ref}（回复「接待 {ref}」即可接手）")
    return clip("\n".join(lines), LIMITS["text"])


def mine_line(handoff: Handoff, customer_name: str, now: datetime) -> str:
    """One line of `我的`: '#12 小明 询价 等待8分钟：<the customer's words, 20 characters>' (the day added when
    the number is not today's; 已回复 once a human answered)."""
    created = handoff.created_at
    ref = handoff.ref
    if handoff.no and handoff.day != f"{now.astimezone(created.tzinfo):%y%m%d}":
        ref += f"（{created.month}月{created.day}日）"
    state = "已回复" if handoff.first_reply_at else f"等待{_waited((now - created).total_seconds())}"
    text = " ".join(handoff.text.split())
    if len(text) > MINE_TEXT_CHARS:
        text = text[:MINE_TEXT_CHARS] + "…"
    return f"{ref} {customer_name} {LABELS_ZH.get(handoff.intent) or _label(handoff.intent)} {state}：{text}"


def mine_text(lines: Sequence[str]) -> str:
    """The answer to `我的`: my open handoffs, one a line, within 2048 bytes (the rest counted)."""
    if not lines:
        return "您当前没有进行中的转接。"
    foot = "\n回复「接待 编号」接待，「结束 编号」结束并交回机器人"
    out = f"您的转接（{len(lines)}）："
    for i, line in enumerate(lines):
        more = f"\n……另有{len(lines) - i}条"
        if len((out + "\n" + line + more + foot).encode()) > LIMITS["text"]:
            return out + more + foot
        out += "\n" + line
    return out + foot


def digest_text(entries: Sequence[str], max_bytes: int = LIMITS["text"]) -> str:
    """Several alerts coalesced into one text (per-member rate limit); says how many did not fit."""
    head = f"您有{len(entries)}条新的转人工提醒："
    out = head
    for i, entry in enumerate(entries):
        line = f"\n{i + 1}. {entry}"
        rest = f"\n……另有{len(entries) - i}条，请在应用中回复「我的转接」查看"
        if len((out + line).encode()) + len(rest.encode()) > max_bytes and i < len(entries) - 1:
            return out + rest
        out += line
    return clip(out, max_bytes)


# ---------------------------------------------------------------------------------------------
# Team robot (group webhook)


def robot_summary_text(handoffs: Sequence[Handoff], *, now: datetime) -> Json:
    """One group robot message for handoffs that waited for the robot's next free minute."""
    lines = [f'## <font color="warning">【需要支援】另有 {len(handoffs)} 位客户等待接待</font>']
    for h in handoffs:
        waited = _minutes((now - h.created_at).total_seconds())
        lines.append(f"> {h.ref}｜{_label(h.intent)}｜已等待{waited}分钟｜{clip(h.text, 40)}")
    lines.append("请在企业微信客服里接待，或在应用消息里点「我来接待」。")
    return {"msgtype": "markdown", "markdown": {"content": clip("\n".join(lines), 4000)}}


def robot_text(handoff: Handoff, customer_name: str, *, now: datetime, assigned_name: str | None = None,
               notified: Sequence[str] = (), mention: Sequence[str] = ()) -> Json:
    """Group robot markdown body for the last rung of the ladder (or a queue alert), <=4096 bytes."""
    waited = _minutes((now - handoff.created_at).total_seconds())
    matched = "、".join(handoff.matched)
    head = (f'## <font color="warning">【需要支援】客户{_label(handoff.intent)}，'
            f"已等待{waited}分钟无人回复</font>")
    lines = [head, f"> 客户：{customer_name or handoff.customer}",
             f"> 原因：{_label(handoff.intent)}" + (f"（{matched}）" if matched else ""),
             f"> 客户说：{clip(handoff.text, 600)}"]
    if assigned_name:
        lines.append(f"> 负责顾问：{assigned_name}")
    if notified:
        lines.append(f"> 已提醒：{'、'.join(notified)}")
    lines.append(f'> 编号：<font color="comment">{handoff.ref}</font>')
    if mention:
        lines.append(" ".join(f"<@{u}>" for u in mention))  # markdown mentions: <@userid>
    return {"msgtype": "markdown", "markdown": {"content": clip("\n".join(lines), LIMITS["robot.markdown"])}}
