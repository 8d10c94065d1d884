"""Chat as a sandbox customer from the browser: what `wecom-bot chat` does, plus the transcript."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis
import requests

from bot.web.envelope import CallbackCrypto, kf_notice_xml

SAID = "wecom:console:sandbox:said:"  # customer -> what they typed here (JSON lines), 7 days
KEEP = 200


class SandboxChat:
    """Posts customer texts to the sandbox and an encrypted kf callback to the service; reads the outbox."""

    default_customer = "wmSandboxWeb01"

    def __init__(self, settings: Any, r: redis.Redis, sandbox_url: str, service_url: Callable[[], str],
                 wait: float = 4.0) -> None:
        self.settings, self.r, self.url, self.wait = settings, r, sandbox_url.rstrip("/"), wait
        self.service_url = service_url  # where the service listens (set by `serve`), not what Host: says
        self.crypto = CallbackCrypto(settings.token, settings.aes_key, settings.corp_id)
        self.http = requests.Session()

    def outbox(self, since: int = 0) -> dict[str, Any]:
        return self.http.get(f"{self.url}/sandbox/outbox", params={"since": since}, timeout=5).json()

    def send(self, customer: str, text: str) -> str | None:
        """Say `text` as `customer`; wait a little for the bot's answer. Returns an error text or None."""
        service = self.service_url().rstrip("/")
        if not service:
            return "服务地址未知：请用 wecom-bot serve 启动"
        callback_url = service + self.settings.callback_path
        try:
            since = self.outbox()["next"]
            said = self.http.post(f"{self.url}/sandbox/customer/text",
                                  json={"external_userid": customer, "text": text}, timeout=5).json()
            key = SAID + customer
            with self.r.pipeline(transaction=False) as p:
                p.rpush(key, json.dumps({"at": time.time(), "text": text}, ensure_ascii=False))
                p.ltrim(key, -KEEP, -1).expire(key, 7 * 86400)
                p.execute()
            query, body = self.crypto.encrypt(kf_notice_xml(self.settings.corp_id, said["token"], said["open_kfid"]))
            resp = self.http.post(callback_url, params=query, data=body.encode(), timeout=10)
        except (requests.RequestException, ValueError, KeyError) as exc:
            return f"发送失败：{exc.__class__.__name__}"
        if resp.status_code != 200:
            return f"服务回调返回 HTTP {resp.status_code}"
        deadline, got = time.monotonic() + self.wait, False
        while time.monotonic() < deadline:
            page = self.outbox(since)
            if any(i.get("kind") == "customer" and i.get("touser") == customer for i in page["items"]):
                if not got:
                    got, deadline = True, min(deadline, time.monotonic() + 0.6)  # the rest of this answer
            time.sleep(0.1)
        return None if got else "机器人暂未回复（工作进程是否在运行？）"

    def conversation(self, customer: str) -> dict[str, Any]:
        """The customer's side (what they typed and received) and the staff side, oldest first."""
        said = [json.loads(x) for x in self.r.lrange(SAID + customer, 0, -1)]
        try:
            items = self.outbox()["items"]
        except (requests.RequestException, ValueError):
            items = []
        customer_side = [{"at": s["at"], "who": "customer", "text": s["text"]} for s in said]
        staff_side = []
        first = said[0]["at"] if said else None
        for item in items:
            if item.get("kind") == "customer" and item.get("touser") == customer:
                customer_side.append({"at": item.get("at", 0), "who": "bot", "text": render(item)})
            elif item.get("kind") == "staff" and first is not None and item.get("at", 0) >= first - 1:
                staff_side.append({"at": item.get("at", 0), "to": item.get("touser") or "群机器人",
                                   "text": render(item)})
        customer_side.sort(key=lambda m: m["at"])
        return {"customer": customer_side, "staff": staff_side}


def render(item: dict[str, Any]) -> str:
    """A readable line for a sandbox outbox item (as `wecom-bot chat` prints it)."""
    mtype = item.get("msgtype")
    if mtype == "text":
        return str((item.get("text") or {}).get("content", ""))
    if mtype == "markdown":
        return str((item.get("markdown") or {}).get("content", ""))
    if mtype == "template_card":
        card = item.get("template_card") or {}
        return "［卡片］" + str((card.get("main_title") or {}).get("title") or card.get("card_type") or "")
    if mtype == "miniprogram":
        return "［小程序］" + str((item.get("miniprogram") or {}).get("title", ""))
    if mtype == "link":
        return "［链接］" + str((item.get("link") or {}).get("title", ""))
    if mtype == "business_card":
        return "［名片］" + str((item.get("business_card") or {}).get("userid", ""))
    if mtype == "msgmenu":
        menu = item.get("msgmenu") or {}
        return "［菜单］" + str(menu.get("head_content", ""))
    payload = item.get(mtype) if mtype else None
    return f"［{mtype}］" + json.dumps(payload, ensure_ascii=False)[:200]
