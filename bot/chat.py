"""`wecom-bot chat`: be a customer of the sandbox bot from a terminal."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TextIO

import requests

from bot.crypto import CallbackCrypto


def kf_notice_xml(corp_id: str, token: str, open_kfid: str) -> str:
    """The plaintext of a kf_msg_or_event callback, as WeCom sends it."""
    return (f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><CreateTime>{int(time.time())}</CreateTime>"
            f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>"
            f"<Token><![CDATA[{token}]]></Token><OpenKfId><![CDATA[{open_kfid}]]></OpenKfId></xml>")


def _show(item: dict, out: TextIO) -> None:
    if item.get("kind") == "customer":
        kind = item.get("msgtype")
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
        body = (item.get("text") or {}).get("content") or (item.get("markdown") or {}).get("content") or \
            (card.get("main_title") or {}).get("title") or json.dumps(card or item, ensure_ascii=False)[:300]
        out.write(f"  -> 员工 {to}: {body}\n")


def run_chat(info_path: str | None, customer: str, inp: TextIO, out: TextIO, wait: float = 3.0) -> int:
    """Read lines as customer messages; post real encrypted callbacks; print what came back."""
    path = Path(info_path or "var/sandbox.json")
    if not path.exists():
        out.write(f"{path} not found: start the service first with `uv run wecom-bot serve` "
                  f"(sandbox mode, WECOM_SECRET unset)\n")
        return 1
    info = json.loads(path.read_text())
    crypto = CallbackCrypto(info["token"], info["aes_key"], info["corp_id"])
    http = requests.Session()
    since = http.get(f"{info['sandbox_url']}/sandbox/outbox", params={"since": 0}, timeout=5).json()["next"]
    interactive = inp.isatty()
    out.write(f"你是客户 {customer}，在微信里给客服号发消息。输入消息后回车，Ctrl-D 退出。\n")
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
        said = http.post(f"{info['sandbox_url']}/sandbox/customer/text",
                         json={"external_userid": customer, "text": text}, timeout=5).json()
        query, body = crypto.encrypt(kf_notice_xml(info["corp_id"], said["token"], info["open_kfid"]))
        resp = http.post(info["service_url"] + info["callback_path"], params=query, data=body.encode(), timeout=10)
        if resp.status_code != 200:
            out.write(f"  (service answered HTTP {resp.status_code})\n")
        deadline, got = time.monotonic() + wait, False
        while time.monotonic() < deadline:
            page = http.get(f"{info['sandbox_url']}/sandbox/outbox", params={"since": since}, timeout=5).json()
            for item in page["items"]:
                _show(item, out)
                got = True
            since = page["next"]
            if got:
                deadline = min(deadline, time.monotonic() + 0.5)  # collect the rest of this reply
            time.sleep(0.1)
        if not got:
            out.write("  (no reply)\n")
        out.flush()
