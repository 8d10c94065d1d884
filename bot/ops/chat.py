"""`wecom-bot chat`: be a customer of the sandbox bot from a terminal."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import requests

from bot.web.envelope import CallbackCrypto, kf_notice_xml


def _show(item: dict[str, Any], out: TextIO) -> None:
    """One line per message the sandbox recorded: what the customer or a staff member was sent."""
    if item.get("kind") == "customer":
        kind = str(item.get("msgtype"))
        body = {"text": lambda: item["text"]["content"],
                "business_card": lambda: f"[顾问名片] {item['business_card']['userid']}",
                "link": lambda: f"[链接] {item['link'].get('title', '')} {item['link'].get('url', '')}",
                "miniprogram": lambda: f"[小程序] {item['miniprogram'].get('title', '')}",
                }.get(kind, lambda: json.dumps({k: v for k, v in item.items() if k not in ("seq", "kind", "at")},
                                               ensure_ascii=False))()
        out.write(f"  机器人 -> 客户: {body}\n")
    else:
        to = item.get("touser") or item.get("key") or "?"
        card = item.get("template_card") or {}
        if item.get("msgtype") == "update_template_card":
            out.write(f"  -> 员工 {to}: [卡片按钮变为] {(item.get('button') or {}).get('replace_name', '')}\n")
            return
        body = (item.get("text") or {}).get("content") or (item.get("markdown") or {}).get("content") or \
            (card.get("main_title") or {}).get("title") or json.dumps(card or item, ensure_ascii=False)[:300]
        out.write(f"  -> 员工 {to}: {body}\n")


HELP = """命令（以 / 开头，扮演员工）：
  /claim [userid]      点击该员工最近收到的转人工卡片上的「我来接待」
  /pass [userid]       点击「转给同事」
  /reply userid 文本    员工在企业微信里回复客户（人工接待）
  /staff userid 文本    员工给应用发指令，例如：/staff li.consultant 我的
  /end                 结束会话（客服会话状态变为已结束）
其他输入都是客户发给客服号的消息。"""


class ChatSession:
    """One terminal customer (and the staff around them) talking to the sandbox service."""

    def __init__(self, info: dict, customer: str, out: TextIO, wait: float,
                 decisions: Callable[[float], list[dict[str, Any]]] | None = None):
        self.info, self.customer, self.out, self.wait = info, customer, out, wait
        self.decisions = decisions  # --debug: the service's recorded decisions since a time
        self.said_at = 0.0
        self.crypto = CallbackCrypto(info["token"], info["aes_key"], info["corp_id"])
        self.http = requests.Session()
        self.cards: dict[str, dict] = {}  # userid -> the last alert card they got
        self.since = self._outbox(0)["next"]

    def _outbox(self, since: int) -> dict:
        return self.http.get(f"{self.info['sandbox_url']}/sandbox/outbox", params={"since": since}, timeout=5).json()

    def _sandbox(self, path: str, body: dict) -> dict:
        return self.http.post(f"{self.info['sandbox_url']}/sandbox/{path}", json=body, timeout=5).json()

    def _callback(self, plain: str) -> None:
        query, body = self.crypto.encrypt(plain)
        resp = self.http.post(self.info["service_url"] + self.info["callback_path"], params=query,
                              data=body.encode(), timeout=10)
        if resp.status_code != 200:
            self.out.write(f"  (service answered HTTP {resp.status_code})\n")

    def _kf_notice(self, token: str) -> None:
        self._callback(kf_notice_xml(self.info["corp_id"], token, self.info["open_kfid"]))

    def say(self, text: str) -> None:
        """The customer writes."""
        self.said_at = time.time() - 1.0
        self._kf_notice(self._sandbox("customer/text", {"external_userid": self.customer, "text": text})["token"])

    def command(self, line: str) -> None:
        """A /command: act as staff or end the session."""
        verb, *rest = line[1:].split(maxsplit=2)
        corp = self.info["corp_id"]
        if verb in ("claim", "pass"):
            userid = rest[0] if rest else next(iter(self.cards), "")
            card = self.cards.get(userid)
            if not card:
                self.out.write("  (no alert card received yet)\n")
                return
            key = next(b["key"] for b in card["template_card"]["button_list"] if b["key"].startswith(verb))
            self._callback(
                f"<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[{userid}]]></FromUserName>"
                f"<CreateTime>{time.time_ns()}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
                f"<Event><![CDATA[template_card_event]]></Event><EventKey><![CDATA[{key}]]></EventKey>"
                f"<TaskId><![CDATA[{card['template_card']['task_id']}]]></TaskId>"
                f"<CardType><![CDATA[button_interaction]]></CardType>"
                f"<ResponseCode><![CDATA[{card.get('response_code') or ''}]]></ResponseCode></xml>")
        elif verb == "reply" and len(rest) == 2:
            said = self._sandbox("staff/text", {"external_userid": self.customer, "servicer_userid": rest[0],
                                                "text": rest[1]})
            self._kf_notice(said["token"])
        elif verb == "staff" and len(rest) == 2:
            self._callback(
                f"<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[{rest[0]}]]></FromUserName>"
                f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
                f"<Content><![CDATA[{rest[1]}]]></Content><MsgId>{time.time_ns()}</MsgId></xml>")
        elif verb == "end":
            said = self._sandbox("event", {"event": {"event_type": "session_status_change", "change_type": 3,
                                                     "external_userid": self.customer}})
            self._kf_notice(said["token"])
        else:
            self.out.write(HELP + "\n")

    def show_replies(self, quiet: bool = False) -> None:
        """Print what the customer and staff received, waiting up to `wait` seconds."""
        deadline, got = time.monotonic() + self.wait, False
        while time.monotonic() < deadline:
            page = self._outbox(self.since)
            for item in page["items"]:
                if item.get("msgtype") == "template_card" and item.get("touser"):
                    self.cards[item["touser"]] = item
                _show(item, self.out)
                got = True
            self.since = page["next"]
            if got:
                deadline = min(deadline, time.monotonic() + 0.5)  # collect the rest of this reply
            time.sleep(0.1)
        if not got and not quiet:
            self.out.write("  (no reply)\n")
        if self.decisions and not quiet:
            self.show_decision()
        self.out.flush()

    def show_decision(self) -> None:
        """--debug: what the service decided for the customer's last message."""
        assert self.decisions is not None
        mine = [e for e in self.decisions(self.said_at) if e.get("customer") == self.customer]
        for event in mine[:1]:
            matched = "、".join(event.get("matched") or [])
            confidence = event.get("confidence")
            self.out.write(f"  [debug] intent={event.get('intent')} confidence="
                           f"{confidence if confidence is not None else '-'} route={event.get('route') or '-'}"
                           f"{' matched=' + matched if matched else ''}\n")


def run_chat(info_path: str | None, customer: str, inp: TextIO, out: TextIO, wait: float = 3.0,
             decisions: Callable[[float], list[dict[str, Any]]] | None = None) -> int:
    """Read lines as customer messages (or /commands as staff); print what came back."""
    path = Path(info_path or "var/sandbox.json")
    if not path.exists():
        out.write(f"{path} not found: start the service first with `uv run wecom-bot serve` "
                  f"(sandbox mode, WECOM_SECRET unset)\n")
        return 1
    chat = ChatSession(json.loads(path.read_text()), customer, out, wait, decisions)
    interactive = inp.isatty()
    out.write(f"你是客户 {customer}，在微信里给客服号发消息。输入消息后回车，/help 看员工命令，Ctrl-D 退出。\n")
    while True:
        if interactive:
            out.write("客户> ")
            out.flush()
        line = inp.readline()
        if not line:
            return 0
        text = line.rstrip("\n")
        if not text.strip():
            continue
        if text.startswith("/"):
            chat.command(text.strip())
        else:
            chat.say(text)
        chat.show_replies(quiet=text.startswith("/"))
