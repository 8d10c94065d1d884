"""`wecom-bot chat`: be a customer of the sandbox bot from a terminal."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import redis
import requests

from bot.web.envelope import CallbackCrypto, kf_notice_xml


def _card_lines(card: dict[str, Any]) -> list[str]:
    """A staff card's main fields: title (and its line below), key/value rows, the quoted message, the buttons."""
    title = card.get("main_title") or {}
    lines = ["[卡片] " + " · ".join(str(t) for t in (title.get("title"), title.get("desc")) if t)]
    if card.get("sub_title_text"):
        lines.append(str(card["sub_title_text"]))
    rows = [f"{r.get('keyname', '')}：{r.get('value', '')}" for r in card.get("horizontal_content_list") or []]
    if rows:
        lines.append("  ".join(rows))
    quote = (card.get("quote_area") or {}).get("quote_text")
    if quote:
        lines += str(quote).splitlines()
    buttons = " ".join(f"[{b.get('text', '')}]" for b in card.get("button_list") or [])
    if buttons:
        lines.append("按钮：" + buttons)
    return lines


def _show(item: dict[str, Any], out: TextIO) -> None:
    """The lines for one message the sandbox recorded: what the customer or a staff member was sent."""
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
        if card:
            first, *rest = _card_lines(card)
            out.write(f"  -> 员工 {to}: {first}\n" + "".join(f"       {line}\n" for line in rest))
            return
        body = (item.get("text") or {}).get("content") or (item.get("markdown") or {}).get("content") or \
            json.dumps(item, ensure_ascii=False)[:300]
        out.write(f"  -> 员工 {to}: {body}\n")


SERVICE_DOWN = "the service is not running: start it with `uv run wecom-bot serve`"
SERVICE_SLOW = "the service did not answer in time (busy?): try again"


def _not_sent(exc: Exception) -> str:
    """Why a line could not be sent, in one line: a timeout is not a stopped service."""
    return SERVICE_SLOW if isinstance(exc, requests.Timeout) else SERVICE_DOWN


HELP = """命令（以 / 开头，扮演员工）：
  /claim [userid]      点击该员工最近收到的转人工卡片上的「我来接待」
  /pass [userid]       点击「转给同事」
  /reply userid 文本    员工在企业微信里回复客户（人工接待）
  /staff userid 文本    员工给应用发指令，例如：/staff li.consultant 我的
  /end                 结束会话（客服会话状态变为已结束）
其他输入都是客户发给客服号的消息。"""


class ChatSession:
    """One terminal customer (and the staff around them) talking to the sandbox service. A Reader thread
    (or poll()) prints what the sandbox outbox receives, as it arrives; the rest of the session only sends."""

    def __init__(self, info: dict, customer: str, out: TextIO, wait: float,
                 decisions: Callable[[float], list[dict[str, Any]]] | None = None, interactive: bool = False):
        self.info, self.customer, self.out, self.wait = info, customer, out, wait
        self.decisions = decisions  # --debug: the service's recorded decisions since a time
        self.interactive = interactive  # a terminal: re-draw the prompt after messages that arrive meanwhile
        self.said_at = 0.0
        self.crypto = CallbackCrypto(info["token"], info["aes_key"], info["corp_id"])
        self.http = requests.Session()
        self.http.headers["Connection"] = "close"  # no kept-alive socket outlives a stopped service
        self.cards: dict[str, dict] = {}  # userid -> the last alert card they got
        self.lock = threading.RLock()  # output, cards and the counters below
        self.polling = threading.Lock()  # one outbox read at a time
        self.shown = 0  # outbox items printed so far
        self.shown_at = 0.0  # time.monotonic() of the last one
        self.prompt = ""  # what the terminal shows while waiting for a line ("" while busy)
        self.down = False  # the last outbox poll failed
        self.since = self._outbox(0)["next"]

    def _outbox(self, since: int) -> dict:
        return self.http.get(f"{self.info['sandbox_url']}/sandbox/outbox", params={"since": since}, timeout=5).json()

    def _sandbox(self, path: str, body: dict) -> dict:
        return self.http.post(f"{self.info['sandbox_url']}/sandbox/{path}", json=body, timeout=5).json()

    def write(self, text: str) -> None:
        """Print `text` (whole lines); over a waiting prompt, clear it first and draw it again after."""
        with self.lock:
            if self.prompt:
                self.out.write("\r\033[K" if self.interactive else "\n")
            self.out.write(text)
            if self.prompt:
                self.out.write(self.prompt)
            self.out.flush()

    def poll(self) -> int:
        """Print what arrived in the outbox since the last poll; returns how many. Raises
        requests.RequestException (or ValueError) when the sandbox does not answer."""
        with self.polling:
            page = self._outbox(self.since)
            if page["next"] < self.since:  # a new service (its sandbox starts empty): read it from the start
                page = self._outbox(0)
            return self._shown(page)

    def _shown(self, page: dict) -> int:
        with self.lock:
            if self.down:
                self.down = False
                self.write("  (the service is back)\n")
            for item in page["items"]:
                if item.get("msgtype") == "template_card" and item.get("touser"):
                    self.cards[item["touser"]] = item
            if page["items"]:
                buf = io.StringIO()
                for item in page["items"]:
                    _show(item, buf)
                self.write(buf.getvalue())
                self.shown += len(page["items"])
                self.shown_at = time.monotonic()
            self.since = page["next"]
            return len(page["items"])

    def lost(self) -> None:
        """The sandbox stopped answering: say so once."""
        with self.lock:
            if not self.down:
                self.down = True
                self.write(f"  ({SERVICE_DOWN})\n")

    def _callback(self, plain: str) -> None:
        query, body = self.crypto.encrypt(plain)
        resp = self.http.post(self.info["service_url"] + self.info["callback_path"], params=query,
                              data=body.encode(), timeout=10)
        if resp.status_code != 200:
            self.write(f"  (service answered HTTP {resp.status_code})\n")

    def _kf_notice(self, token: str) -> None:
        self._callback(kf_notice_xml(self.info["corp_id"], token, self.info["open_kfid"]))

    def say(self, text: str) -> None:
        """The customer writes."""
        self.said_at = time.time() - 1.0
        self._kf_notice(self._sandbox("customer/text", {"external_userid": self.customer, "text": text})["token"])

    def enter(self, channel: str) -> bool:
        """The customer scans the code of `channel`: a staff code adds the staff member (the
        add_external_contact callback, with State and a welcome code), a kf link opens the chat (enter_session
        with the scene). False when no code carries it."""
        scanned = self._sandbox("scan", {"state": channel, "external_userid": self.customer})
        if scanned.get("kind") == "kf":
            self._kf_notice(scanned["token"])
            self.write(f"  ✓ 客户扫了渠道 {channel} 的客服码，进入会话\n")
        elif scanned.get("kind") == "staff":
            corp = self.info["corp_id"]
            self._callback(
                f"<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
                f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
                f"<Event><![CDATA[change_external_contact]]></Event>"
                f"<ChangeType><![CDATA[add_external_contact]]></ChangeType>"
                f"<UserID><![CDATA[{scanned['UserID']}]]></UserID>"
                f"<ExternalUserID><![CDATA[{self.customer}]]></ExternalUserID>"
                f"<State><![CDATA[{channel}]]></State><WelcomeCode><![CDATA[{scanned['WelcomeCode']}]]></WelcomeCode>"
                f"</xml>")
            self.write(f"  ✓ 客户扫了渠道 {channel} 的活码，添加了员工 {scanned['UserID']}\n")
        else:
            self.write(f"  (no code carries channel {channel!r}: run `uv run wecom-bot channels sync` first)\n")
            return False
        return True

    def command(self, line: str) -> None:
        """A /command: act as staff or end the session."""
        verb, *rest = line[1:].split(maxsplit=2)
        corp = self.info["corp_id"]
        if verb in ("claim", "pass"):
            userid = rest[0] if rest else next(iter(self.cards), "")
            card = self.cards.get(userid)
            if not card:
                self.write("  (no alert card received yet)\n")
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
            self.write(f"  ✓ {rest[0]} 在微信客服里回复了客户：{rest[1]}\n")
        elif verb == "staff" and len(rest) == 2:
            self._callback(
                f"<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[{rest[0]}]]></FromUserName>"
                f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
                f"<Content><![CDATA[{rest[1]}]]></Content><MsgId>{time.time_ns()}</MsgId></xml>")
        elif verb == "end":
            said = self._sandbox("event", {"event": {"event_type": "session_status_change", "change_type": 3,
                                                     "external_userid": self.customer}})
            self._kf_notice(said["token"])
            self.write(f"  ✓ 会话已结束（客户 {self.customer} 的客服会话状态变为已结束）\n")
        else:
            self.write(HELP + "\n")

    def show_replies(self, quiet: bool = False) -> None:
        """Wait up to `wait` seconds for what the line just sent brings (the Reader prints it), then say
        "(no reply)" if nothing came; with --debug, what the service decided."""
        deadline = time.monotonic() + self.wait
        with self.lock:
            before = self.shown
        got = False
        while time.monotonic() < deadline:
            with self.lock:
                got, last = self.shown > before, self.shown_at
            if got and time.monotonic() - last >= 0.5:  # the rest of this reply has come too
                break
            time.sleep(0.05)
        if not got and not quiet and not self.down:
            self.write("  (no reply)\n")
        if self.decisions and not quiet:
            self.show_decision()

    def show_decision(self) -> None:
        """--debug: what the service decided for the customer's last message."""
        assert self.decisions is not None
        try:
            mine = [e for e in self.decisions(self.said_at) if e.get("customer") == self.customer]
        except redis.RedisError:
            self.write("  [debug] (the service's Redis does not answer)\n")
            return
        for event in mine[:1]:
            matched = "、".join(event.get("matched") or [])
            confidence = event.get("confidence")
            self.write(f"  [debug] intent={event.get('intent')} confidence="
                       f"{confidence if confidence is not None else '-'} route={event.get('route') or '-'}"
                       f"{' matched=' + matched if matched else ''}\n")


class Reader(threading.Thread):
    """Polls the sandbox outbox and prints each message when it arrives (a welcome, an escalation or an SOP
    touch sent while nobody types); says once when the service stops answering, and again when it is back."""

    def __init__(self, chat: ChatSession, interval: float = 0.2):
        super().__init__(name="chat-reader", daemon=True)
        self.chat, self.interval = chat, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.chat.poll()
            except (requests.RequestException, ValueError):
                self.chat.lost()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


def run_chat(info_path: str | None, customer: str, inp: TextIO, out: TextIO, wait: float = 3.0,
             decisions: Callable[[float], list[dict[str, Any]]] | None = None, err: TextIO | None = None,
             channel: str | None = None) -> int:
    """Read lines as customer messages (or /commands as staff); print what comes back as it arrives.
    Exit status 1 with one line on `err` when the service is not running."""
    err = err or sys.stderr
    path = Path(info_path or "var/sandbox.json")
    if not path.exists():
        err.write(f"{SERVICE_DOWN} ({path} not found; sandbox mode: WECOM_SECRET unset)\n")
        return 1
    interactive = inp.isatty()
    info = json.loads(path.read_text())
    try:
        chat = ChatSession(info, customer, out, wait, decisions, interactive=interactive)
    except (requests.RequestException, ValueError):
        err.write(f"{SERVICE_DOWN} ({info.get('sandbox_url')} does not answer)\n")
        return 1
    out.write(f"你是客户 {customer}，在微信里给客服号发消息。输入消息后回车，/help 看员工命令，Ctrl-D 退出。\n")
    reader = Reader(chat)
    reader.start()
    try:
        if channel:
            try:
                if not chat.enter(channel):
                    return 1
            except (requests.RequestException, ValueError, KeyError) as exc:
                chat.write(f"  (not sent: {_not_sent(exc)})\n")
                return 1
            chat.show_replies(quiet=True)
        while True:
            if interactive:
                with chat.lock:
                    chat.prompt = "客户> "
                    out.write(chat.prompt)
                    out.flush()
            line = inp.readline()
            with chat.lock:
                chat.prompt = ""
            if not line:
                return 0
            text = line.rstrip("\n")
            if not text.strip():
                continue
            try:
                if text.startswith("/"):
                    chat.command(text.strip())
                else:
                    chat.say(text)
            except (requests.RequestException, ValueError, KeyError) as exc:
                chat.write(f"  (not sent: {_not_sent(exc)})\n")
                continue
            chat.show_replies(quiet=text.startswith("/"))
    except KeyboardInterrupt:
        out.write("\n")
        return 0
    finally:
        reader.stop()
