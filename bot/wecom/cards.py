"""Pure WeCom payload builders for the handoff: consultant card, staff alert card, texts."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.content.team import Consultant
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
    "customer_text",
    "digest_text",
    "escalation_text",
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
                  now: datetime | None = None, complaint: bool = False) -> str:
    """The short text sent with the card: who will help, and when if off hours."""
    who = f"{consultant.title}{consultant.name}" if consultant else "顾问"
    if off_hours:
        when = f"，{_when(next_available, now)}上班后" if next_available else "，上班后"
        return clip(f"现在是非工作时间，已为您登记{when}{who}会第一时间回复您，请留意消息～", LIMITS["text"])
    if consultant is None:
        return "顾问们正在忙，已为您排队，马上就到您，请稍候～"
    if complaint:
        return clip(f"非常抱歉给您带来不好的体验！已请{who}优先处理，马上联系您。", LIMITS["text"])
    return clip(f"已为您安排{who}，马上为您服务，请稍候～", LIMITS["text"])


# ---------------------------------------------------------------------------------------------
# Staff side (app message/send)


def _title(handoff: Handoff, level: int) -> str:
    """main_title.title for an alert."""
    minutes = _minutes(handoff.sla_seconds)
    if level > 0:
        return f"【超时】客户{_label(handoff.intent)}，无人接待，请协助"
    if handoff.intent == "complaint":
        return f"【优先】客户投诉，请{minutes}分钟内接待"
    if handoff.intent in INTENT_LABELS:
        return f"客户{_label(handoff.intent)}，请{minutes}分钟内接待"
    return f"客户需要人工，请{minutes}分钟内接待"


def alert_card(handoff: Handoff, consultant: Consultant | None, customer_name: str, history: Sequence[str],
               tags: Sequence[str], coupons: Sequence[str], task_id: str, *, agentid: int | None = None,
               touser: str | None = None, level: int = 0, now: datetime | None = None) -> Json:
    """message/send body: a button_interaction template_card with claim / pass buttons.

    `touser` defaults to the consultant; `level` > 0 marks an escalated alert (to a backup or
    supervisor); `history` is the last messages, oldest first, already labelled ("客户：...").
    """
    if not valid_task_id(task_id):
        raise ValueError(f"invalid task_id {task_id!r}: <=128 bytes of [0-9A-Za-z_-@]")
    target = touser or (consultant.userid if consultant else None)
    if not target:
        raise ValueError("alert_card needs a consultant or touser")
    matched = "、".join(handoff.matched)
    why = f"{_label(handoff.intent)}（{matched}）" if matched else _label(handoff.intent)
    rows = [("客户", customer_name or handoff.customer), ("原因", why),
            ("标签", "、".join(tags) or "无"), ("优惠券", "、".join(coupons) or "无")]
    if level > 0 and consultant is not None:
        rows.insert(2, ("原顾问", consultant.name))
    horizontal = [{"keyname": clip(k, LIMITS["keyname"]), "value": clip(v, LIMITS["value"])}
                  for k, v in rows[:MAX_HORIZONTAL]]
    created = handoff.created_at
    desc = f"{created:%m-%d %H:%M} · 编号 {handoff.id}"
    if level > 0 and now is not None:
        desc = f"已等待{_minutes((now - created).total_seconds())}分钟 · 编号 {handoff.id}"
    recent = [line for line in history if line][-HISTORY_LINES:]
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
    lines.append(f"编号：{handoff.id}（回复「接待 {handoff.id}」即可接手）")
    return clip("\n".join(lines), LIMITS["text"])


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
        lines.append(f"> {_label(h.intent)}｜已等待{waited}分钟｜{clip(h.text, 40)}")
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
    lines.append(f'> 编号：<font color="comment">{handoff.id}</font>')
    if mention:
        lines.append(" ".join(f"<@{u}>" for u in mention))  # markdown mentions: <@userid>
    return {"msgtype": "markdown", "markdown": {"content": clip("\n".join(lines), LIMITS["robot.markdown"])}}
