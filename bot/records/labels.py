"""Chinese labels for every code an operator may see (console, CLI): one table, and event sentences.

A leaf: it imports nothing of ours but intents/labels.py. Names that live in content (consultants,
campaigns, journeys) come in through a `Names` of lookups, so a caller without them still gets Chinese.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from intents.labels import LABELS_ZH

__all__ = ["LABELS", "TABLES", "Names", "event_name", "event_sentence", "intent_zh", "kf_reason_zh", "outcome_zh", "reason_zh", "zh"]

INTENTS = {**LABELS_ZH, "faq": "常见问题", "none": "非文本/未识别"}
TRIGGERS = {"customer_added": "添加好友", "first_contact": "首次咨询", "intent": "出现意图", "tag": "打上标签",
            "coupon_issued": "领取优惠券", "purchase": "购买", "birthday": "生日", "silence": "沉默未互动",
            "calendar": "按日历", "by_name": "由客户的回复选择加入"}
STOP_FACTS = {"replied": "客户回复", "purchased": "已购买", "redeemed": "已核销优惠券", "unsubscribed": "已退订",
              "handed_off": "已转人工", "contact_deleted": "已删除好友"}
CHANNELS = {"kf": "客服号消息", "mass_task": "群发任务", "staff": "顾问发送", "welcome": "欢迎语", "auto": "自动"}
DECISIONS = {"send": "发送", "remind": "提醒顾问", "defer": "推迟", "skip": "跳过"}
OUTCOMES = {"sent": "已发送", "deferred": "已推迟", "skipped": "已跳过", "failed": "失败", "reminded": "已提醒顾问",
            "duplicate": "重复（已处理过）", "pending": "待重试", "holdout": "对照组（实验，不发送）"}
TOUCH_KINDS = {"welcome": "欢迎语", "education": "使用指南", "care": "关怀回访", "offer": "优惠活动",
               "greeting": "节日/生日祝福", "reminder": "提醒", "winback": "召回", "content": "内容推荐",
               "followup": "跟进", "interaction": "互动"}
# why a touch went where it went, was deferred, skipped, failed or handed to a person
REASONS = {
    "staff_step": "该步骤由顾问亲自发送", "welcome_code": "用添加好友的欢迎语发送",
    "kf_window_open": "客户 48 小时内发过消息，客服号可发", "kf_window_closed": "客户超过 48 小时未发消息",
    "kf_budget_used": "客户上条消息后客服号已发满 5 条", "mass_quota_used": "本月群发次数已用完",
    "quiet_hours": "免打扰时段", "window": "不在发送时段", "daily_cap": "已达每日触达上限", "stale": "推迟过久，已作废",
    "stopped": "已停止", "ignored": "连续未回应", "human_holds": "顾问正在人工接待",
    "no_kf_account": "客户没有在客服号留过言", "kf_refused": "客服号拒绝发送", "no_owner": "客户没有跟进顾问",
    "mass_task_failed": "群发任务失败", "fail_list": "企业微信未能发给该客户", "no_staff": "没有可提醒的顾问",
    "budget": "已发满 5 条", "paused": "旅程已暂停", "errcode": "企业微信错误码", "failed": "发送失败", "unknown": "未知",
}
KF_REFUSALS = {"window": "客户上条消息已超过 48 小时", "budget": "客户上条消息后已发满 5 条"}
ASSIGNMENTS = {"owner": "专属顾问", "least_loaded": "当前接待最少的顾问", "priority_over_capacity": "投诉优先（超出接待上限）",
               "queue_off_hours": "非工作时间，排队", "queue_none_receiving": "无人在线接待，排队",
               "queue_at_capacity": "顾问都已满额，排队", "resumed": "沿用上次分配", "95019": "顾问不在接待状态"}
HANDOFF_STATES = {"open": "等待中", "claimed": "已认领", "answered": "接待中", "closed": "已结束"}
CLOSE_REASONS = {"session_ended": "会话已结束", "idle": "长时间无活动", "closed_by": "顾问结束", "operator": "运营手动结束"}
COUPON_RESULTS = {"issued": "已发放", "existing": "已领过", "exhausted": "已发完", "ineligible": "不符合领取条件",
                  "holdout": "实验对照组（不发券）"}
COUPON_STATES = {"issued": "未使用", "redeemed": "已核销", "expired": "已过期"}
MSGTYPES = {"text": "文字", "image": "图片", "voice": "语音", "video": "视频", "file": "文件", "location": "位置",
            "link": "链接", "business_card": "名片", "miniprogram": "小程序", "msgmenu": "菜单", "event": "事件",
            "channels_shop_product": "商品", "channels_shop_order": "订单", "news": "图文"}
SESSION_STATES = {0: "未处理", 1: "智能助手接待", 2: "待接入池排队", 3: "人工接待", 4: "已结束"}
EVENTS = {
    "message_in": "客户消息", "message_while_human": "客户消息（人工接待中）", "reply_sent": "机器人发送",
    "reply_not_sent": "未发送", "coupon": "优惠券", "handoff_requested": "请求人工", "handoff_opened": "转人工",
    "handoff_claimed": "顾问认领", "handoff_first_reply": "顾问首次回复", "handoff_closed": "转人工结束",
    "handoff_reassigned": "转人工改派", "handoff_transfer_refused": "转接被拒", "handoff_end_refused": "结束会话被拒",
    "touch": "SOP 触达", "touch_failed": "SOP 触达失败", "mass_task": "群发任务", "unsubscribed": "退订",
    "welcome_sent": "欢迎语", "welcome_not_sent": "欢迎语未发送", "send_failed": "发送失败", "staff_alert": "员工提醒",
    "staff_alert_failed": "员工提醒失败", "escalation_failed": "升级提醒失败", "robot_alert": "群机器人提醒",
    "robot_deferred": "群机器人限流", "robot_not_configured": "未配置群机器人", "robot_summary": "群机器人汇总",
    "session_held": "会话由他人接待", "session_state_unknown": "会话状态未知", "tag_mirror_failed": "标签同步失败",
    "step_failed": "步骤失败", "tag": "打标签", "faq": "常见问题", "fallback_repeated": "多次未能解答",
    "sop_reply": "回答 SOP", "staff_reply": "顾问回复", "backlog_skipped": "接入前的消息", "kf_other": "其他来源消息",
    "kf_event": "客服事件", "dead_letters_replayed": "重放失败消息", "journey_paused": "暂停旅程",
    "journey_resumed": "恢复旅程",
}
INBOX_KINDS = {"callback": "企业微信回调", "kf_msg": "客服消息", "touch": "SOP 触达", "escalate": "升级提醒",
               "wake": "上班后分配转人工", "robot_summary": "群机器人汇总"}
KF_EVENTS = {"enter_session": "客户进入会话", "msg_send_fail": "消息发送失败", "session_status_change": "会话状态变化",
             "servicer_status_change": "接待人员状态变化", "user_recall_msg": "客户撤回了一条消息",
             "servicer_recall_msg": "顾问撤回了一条消息", "reject_customer_msg_switch_change": "拒收客户消息设置变化"}
# every table, for a look-up by code and for tests that no code is shown raw
TABLES: dict[str, Mapping[str, str]] = {
    "intent": INTENTS, "trigger": TRIGGERS, "stop": STOP_FACTS, "channel": CHANNELS, "decision": DECISIONS,
    "outcome": OUTCOMES, "touch_kind": TOUCH_KINDS, "reason": REASONS, "assignment": ASSIGNMENTS,
    "handoff_state": HANDOFF_STATES, "close": CLOSE_REASONS, "coupon_result": COUPON_RESULTS,
    "coupon_state": COUPON_STATES, "msgtype": MSGTYPES, "event": EVENTS, "kf_event": KF_EVENTS,
    "inbox_kind": INBOX_KINDS,
}
LABELS: dict[str, str] = {}
for _table in TABLES.values():
    for _code, _name in _table.items():
        LABELS.setdefault(_code, _name)


# prefixed reasons: head -> (sentence, the table its tail is read from)
PREFIXED = {"ignored": ("连续未回应「{}」", "touch_kind"), "stopped": ("已停止：{}", "stop"),
            "kf_refused": ("客服号拒绝发送：{}", "kf")}


def zh(code: Any, table: str | None = None) -> str:
    """The Chinese label of a code (from `table` first, then any table); '—' for none, the code when unknown."""
    if code is None or code == "":
        return "—"
    code = str(code)
    if table and code in TABLES[table]:
        return TABLES[table][code]
    return LABELS.get(code, code)


def intent_zh(label: str | None) -> str:
    """An intent's Chinese name."""
    return zh(label or "none", "intent")


def reason_zh(code: str | None, person: Callable[[str], str] = str) -> str:
    """A reason code, prefixed ones too: 'stopped:handed_off' -> 已停止：已转人工, 'errcode 95018' -> 企业微信错误码 95018,
    'mass_task_failed:fail_list', 'ignored:care', 'closed_by:<userid>' (the person's name), 'reminded:<why>'."""
    if not code:
        return "—"
    if code.startswith("errcode "):
        return f"企业微信错误码 {code[8:]}"
    head, _, rest = code.partition(":")
    if not rest:
        if code.isdigit():
            return ASSIGNMENTS.get(code) or f"企业微信错误码 {code}"
        return zh(code, "reason")
    if head == "closed_by":
        return f"由{person(rest)}结束"
    if head in PREFIXED:
        sentence, table = PREFIXED[head]
        return sentence.format(kf_reason_zh(rest) if table == "kf" else zh(rest, table))
    if head in OUTCOMES and head != "failed":
        return f"{OUTCOMES[head]}（{channel_or_reason(rest)}）"
    return f"{zh(head, 'reason') if head != 'failed' else '失败'}：{reason_zh(rest, person)}"


def kf_reason_zh(code: str | None) -> str:
    """Why a kf message was not sent: 'window' / 'budget' (the 48 h, 5 message rule), 'errcode N'."""
    return KF_REFUSALS.get(code or "", "") or reason_zh(code)


def channel_or_reason(code: str) -> str:
    """'kf' -> 客服号消息, else a reason."""
    return CHANNELS[code] if code in CHANNELS else reason_zh(code)


def outcome_zh(code: str | None) -> str:
    """A touch outcome: 'sent:kf' -> 已发送（客服号消息）, 'reminded:staff_step', 'failed:no_staff:window'."""
    if not code:
        return "—"
    head, _, rest = code.partition(":")
    if not rest:
        return zh(head, "outcome")
    if head == "failed":
        return f"失败（{reason_zh(rest)}）"
    return f"{zh(head, 'outcome')}（{channel_or_reason(rest)}）"


def event_name(kind: str) -> str:
    """An event kind's Chinese name (callback_<kind>: 企业微信回调)."""
    if kind in EVENTS:
        return EVENTS[kind]
    return "企业微信回调" if kind.startswith("callback_") else "其他事件"


@dataclass(frozen=True)
class Names:
    """Look-ups for names kept in content; each returns its argument when unknown."""

    consultant: Callable[[str], str] = str
    campaign: Callable[[str], str] = str
    journey: Callable[[str], str] = str
    campaign_of_code: Callable[[str], str | None] = lambda code: None

    def person(self, userid: Any) -> str:
        return (self.consultant(str(userid)) or str(userid)) if userid else "—"


def _err(d: Mapping[str, Any]) -> str:
    return f"（企业微信错误码 {d['errcode']}）" if d.get("errcode") not in (None, "") else ""


def _said(d: Mapping[str, Any]) -> str:
    text = d.get("text")
    return f"「{text}」" if text else f"[{zh(d.get('msgtype') or 'text', 'msgtype')}]"


# events told by a fixed sentence; by a sentence about a person ({} is the name, from the field);
# refusals and failures (the errcode follows)
SENTENCES = {"robot_alert": "已通知团队群机器人", "robot_deferred": "群机器人本分钟已达上限，稍后汇总发送",
             "robot_not_configured": "未配置团队群机器人，未发群通知", "unsubscribed": "客户退订，不再主动发送",
             "welcome_sent": "已发送欢迎语", "kf_other": "其他来源的消息，仅记录"}
ABOUT = {"handoff_claimed": ("by", "{}认领了这位客户"), "handoff_first_reply": ("by", "{}首次回复客户"),
         "handoff_reassigned": ("frm", "{}不在接待状态，改派他人"), "staff_alert_failed": ("to", "提醒{}失败"),
         "escalation_failed": ("to", "升级提醒{}失败")}
REFUSED = {"handoff_transfer_refused": "转接给顾问被企业微信拒绝", "handoff_end_refused": "结束会话被企业微信拒绝",
           "welcome_not_sent": "欢迎语未发送", "session_state_unknown": "无法查询会话由谁接待",
           "staff_alert_failed": "", "escalation_failed": ""}


# what an operator did from the console or the CLI (events with `by`), after who did it
OPERATOR_ACTIONS: dict[str, Callable[[Mapping[str, Any], Names], str]] = {
    "handoff_closed": lambda d, n: "结束了转人工，机器人恢复接待",
    "handoff_reassigned": lambda d, n: f"把转人工改派给{n.person(d.get('to'))}",
    "dead_letters_replayed": lambda d, n: f"重放了 {d.get('count', 0)} 条失败消息",
    "journey_paused": lambda d, n: f"暂停了旅程「{n.journey(str(d.get('journey') or ''))}」",
    "journey_resumed": lambda d, n: f"恢复了旅程「{n.journey(str(d.get('journey') or ''))}」",
}


def operator_zh(d: Mapping[str, Any]) -> str:
    """Who did an operator action: by "console" (and the client address) or "cli:<os user>"."""
    by, client = str(d.get("by") or ""), str(d.get("client") or "")
    if by == "console":
        return "控制台" + (f"（{client}）" if client else "")
    if by.startswith("cli:"):
        return f"命令行（{by[4:]}）"
    return by


def _sent(text: Any) -> str:
    """What the bot sent, as KfSender records it: the text, or 'business_card' / 'link：标题' -> 名片 / 链接：标题."""
    text = str(text or "")
    head, sep, title = text.partition("：")
    if head in MSGTYPES and (sep or head == text):
        return f"[{MSGTYPES[head]}]" + (f"「{title}」" if title else "")
    return text


def event_sentence(kind: str, d: Mapping[str, Any], names: Names = Names()) -> str:  # noqa: B008 - frozen default
    """One short Chinese sentence for an event (never its JSON)."""
    p = names.person
    if d.get("by") and kind in OPERATOR_ACTIONS:
        return f"{operator_zh(d)}{OPERATOR_ACTIONS[kind](d, names)}"
    if kind in SENTENCES:
        return SENTENCES[kind]
    if kind in ABOUT or kind in REFUSED:
        field, about = ABOUT.get(kind, ("", ""))
        return (about.format(p(d.get(field))) if about else REFUSED[kind]) + (_err(d) if kind in REFUSED else "")
    if kind in ("message_in", "message_while_human"):
        intent = f"（意图：{intent_zh(d['intent'])}）" if d.get("intent") else ""
        return f"客户说{_said(d)}{intent}"
    if kind == "reply_sent":
        return f"发给客户：{_sent(d.get('text'))}" + ("（未确认送达）" if d.get("unconfirmed") else "")
    if kind == "reply_not_sent":
        return f"未发给客户（{kf_reason_zh(d.get('reason'))}）：{_sent(d.get('text'))}"
    if kind == "coupon":
        code = d.get("code")
        campaign = names.campaign_of_code(code) if code else None
        what = f"「{names.campaign(campaign)}」" if campaign else ""
        return f"优惠券{zh(d.get('status'), 'coupon_result')}{what}" + (f"，券码 {code}" if code else "")
    if kind == "touch":
        where = f"{names.journey(str(d.get('journey') or ''))} · {d.get('step') or ''}"
        return f"{where}：{outcome_zh(d.get('outcome'))}"
    if kind == "touch_failed":
        return f"SOP 触达未能送达：{reason_zh(d.get('reason'))}"
    if kind == "mass_task":
        return f"已创建群发任务，由{p(d.get('sender'))}确认发送"
    if kind == "handoff_requested":
        return f"客户要找人工（{intent_zh(d.get('intent'))}），未配置顾问，已礼貌答复"
    if kind == "handoff_opened":
        who = f"分配给{p(d['consultant'])}" if d.get("consultant") else "进入排队"
        return f"转人工（{intent_zh(d.get('intent'))}）：{who}，{zh(d.get('reason'), 'assignment')}"
    if kind == "handoff_closed":
        return f"转人工结束：{reason_zh(d.get('reason'), names.consultant)}"
    if kind == "staff_alert":
        level = f"（第 {d['level']} 级升级）" if d.get("level") else ""
        return f"已提醒{p(d.get('to'))}{level}"
    if kind == "robot_summary":
        return f"群机器人汇总了 {len(d.get('handoffs') or ())} 个等待中的转人工"
    if kind == "send_failed":
        return f"企业微信报告消息未送达（失败类型 {d.get('fail_type')}）"
    if kind == "session_held":
        raw = d.get("state")
        state = SESSION_STATES.get(raw, "其他状态") if isinstance(raw, int) else "其他状态"
        who = f"，由{p(d['servicer'])}接待" if d.get("servicer") else ""
        return f"会话{state}{who}，机器人暂停回复"
    if kind == "tag_mirror_failed":
        return f"标签「{d.get('tag') or ''}」同步到企业微信失败" + _err(d)
    if kind == "tag":
        return f"打上标签「{d.get('tag') or ''}」"
    if kind == "faq":
        if d.get("answered_by") == "welcome":
            return "问候已由欢迎语回答，不再重复"
        return f"按常见问题回答（{intent_zh(d.get('intent'))}）" if d.get("topic") else "没有匹配的常见问题，已兜底回复"
    if kind == "fallback_repeated":
        then = "转人工" if d.get("then") == "handoff" else "提供人工服务"
        return f"连续 {d.get('fallbacks')} 次未能解答，{then}"
    if kind == "sop_reply":
        where = f"{names.journey(str(d.get('journey') or ''))} · {d.get('step') or ''}"
        return f"客户回答了 {where}：选择「{d.get('option') or ''}」"
    if kind == "staff_reply":
        return f"{p(d.get('servicer'))}回复客户" + (f"：{d['text']}" if d.get("text") else "")
    if kind == "backlog_skipped":
        return f"接入前的历史消息{_said(d)}，未回复"
    if kind == "kf_event":
        return zh(d.get("event_type"), "kf_event") if d.get("event_type") in KF_EVENTS else "企业微信客服事件"
    return f"「{d['text']}」" if d.get("text") else ""
